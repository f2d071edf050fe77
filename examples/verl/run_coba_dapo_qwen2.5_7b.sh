#!/usr/bin/env bash
# CoBA-RL (cobarl) on verl 0.9: Qwen2.5-7B-Instruct, DAPO-Math-17K, 16 rollouts per prompt on average
# in [2, 128], kappa = 11, lr 1e-6, max response 4096, clip-higher 0.28, no KL.
#
# The same as `bash run.sh coba_dapo_qwen2.5_7b "$@"` (see run.sh for the environment variables), with
# the config's defaults MODEL_PATH=Qwen/Qwen2.5-7B-Instruct and ROLLOUT_TP=4 (the authors used SGLang, TP 4).
set -euo pipefail
exec bash "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/run.sh" coba_dapo_qwen2.5_7b "$@"
