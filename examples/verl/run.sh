#!/usr/bin/env bash
# cobarl on verl 0.9: launch one of the configurations in this folder (see docs/verl.md), e.g.
#   bash run.sh coba_dapo_qwen2.5_7b
#   bash run.sh reinforce_ada_pos_dapo_qwen2.5_math_1.5b trainer.total_training_steps=10
# Run it on the Ray head node after `ray start --head` (and `ray start --address=...` on the others),
# or on a single GPU node (Ray starts locally). Arguments after the config name are Hydra overrides.
# Environment: TRAIN_FILE, VAL_FILE, NNODES, GPUS_PER_NODE, ROLLOUT_ENGINE (vllm or sglang), and
# MODEL_PATH / ROLLOUT_TP to change a config's own defaults.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="${1:?usage: bash run.sh <config name, e.g. coba_dapo_qwen2.5_7b> [hydra overrides]}"
shift
export TRAIN_FILE="${TRAIN_FILE:-$HOME/data/dapo-math-17k.parquet}"
export VAL_FILE="${VAL_FILE:-$HOME/data/aime-2024.parquet}"
export NNODES="${NNODES:-1}"
export GPUS_PER_NODE="${GPUS_PER_NODE:-8}"
export ROLLOUT_ENGINE="${ROLLOUT_ENGINE:-vllm}"
export COBARL_VERL_EXAMPLES="$HERE"  # where reward_01.py is

python3 - <<'PY'
import cobarl.integrations.verl  # fails early with the install hint when verl / TransferQueue are missing
PY

python3 -m verl.trainer.main_ppo \
    --config-path="$HERE" \
    --config-name="$CONFIG" \
    "$@"
