#!/usr/bin/env bash
# Create ./.venv (once) and install cobarl with the extras the CLI and tests use.
#
#   bash scripts/setup.sh                 # train + report + math + test + peft extras
#   COBARL_EXTRAS=train bash scripts/setup.sh
#
# torch: if the venv already imports torch (e.g. created with --system-site-packages on a GPU
# machine), it is left alone. Otherwise COBARL_TORCH is installed when set (your CUDA build),
# else torch==2.13.0, which on a machine without a GPU here resolves to the CPU build; an
# unpinned torch would pull a multi-GB CUDA build that a CPU machine cannot use.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${COBARL_VENV:-.venv}
EXTRAS=${COBARL_EXTRAS:-train,report,math,test,peft}

if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if [ -n "${COBARL_TORCH:-}" ]; then
    "${PIP[@]}" "$COBARL_TORCH"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found; installing torch with CUDA from the package index" >&2
    "${PIP[@]}" torch
  else
    "${PIP[@]}" torch==2.13.0
  fi
fi
# Reinstall only when the dependencies asked for changed (pyproject.toml or the extras): an
# editable install already picks up code changes, and pip's resolver costs ~20 s even when idle.
STAMP="$VENV/.cobarl-setup"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) ${EXTRAS}"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  "${PIP[@]}" -e ".[${EXTRAS}]"
  echo "$WANT" > "$STAMP"
fi
echo "setup: ready ($("$VENV/bin/python" -c 'import torch, cobarl; print("cobarl", cobarl.__version__, "torch", torch.__version__)'))" >&2
