#!/usr/bin/env bash
# CoBA-RL (cobarl) on verl 0.9: Qwen2.5-7B-Instruct, DAPO-Math-17K, 16 rollouts per prompt on average
# in [2, 128], kappa = 11, lr 1e-6, max response 4096, clip-higher 0.28, no KL.
#
# Run on the Ray head node after `ray start --head` (and `ray start --address=...` on the others),
# or on a single 8-GPU node (Ray starts locally). See docs/verl.md. Extra Hydra overrides are passed
# through, e.g. `bash run_coba_dapo_qwen2.5_7b.sh trainer.total_epochs=1`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export MODEL_PATH="${MODEL_PATH:-Qwen/Qwen2.5-7B-Instruct}"
export TRAIN_FILE="${TRAIN_FILE:-$HOME/data/dapo-math-17k.parquet}"
export VAL_FILE="${VAL_FILE:-$HOME/data/aime-2024.parquet}"
export NNODES="${NNODES:-1}"
export GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
export ROLLOUT_ENGINE="${ROLLOUT_ENGINE:-vllm}"  # or sglang (the CoBA-RL authors used SGLang)
export ROLLOUT_TP="${ROLLOUT_TP:-4}"

python3 - <<'PY'
import cobarl.integrations.verl  # fails early with the install hint when verl / TransferQueue are missing
PY

python3 -m verl.trainer.main_ppo \
    --config-path="$HERE" \
    --config-name=coba_dapo_qwen2.5_7b \
    "$@"
