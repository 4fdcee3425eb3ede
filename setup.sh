#!/usr/bin/env bash
# Create .venv and install maxtext_like (editable) with its test extras. Idempotent: a second run takes seconds.
#
# Python: 3.11 by default. The reference implementation for parity tests is torch==2.13.0 CPU, and on these
# machines its CPU wheel exists for Python 3.11 only; on 3.12 pip would fetch a multi-GB CUDA build, which we
# never want. Set PYTHON=/path/to/python3.12 to choose another interpreter (then install torch yourself).
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  local candidates=()
  if command -v pyenv >/dev/null 2>&1; then
    local root; root=$(pyenv root)
    candidates+=("$root"/versions/3.11*/bin/python3.11)
  fi
  candidates+=(python3.11 /usr/bin/python3.11 python3)
  for c in "${candidates[@]}"; do
    if [ -x "$c" ] || command -v "$c" >/dev/null 2>&1; then
      if "$c" -c 'import sys; assert sys.version_info[:2] >= (3, 11)' 2>/dev/null; then echo "$c"; return; fi
    fi
  done
  echo "setup.sh: no Python >= 3.11 found (set PYTHON=...)" >&2; exit 2
}

PY=$(find_python)
stamp=.venv/.maxtext_like_setup
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$PY" -c 'import sys; print(sys.version.split()[0])')"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup.sh: .venv is up to date (Python $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'))"
  exit 0
fi
echo "setup.sh: using $PY ($("$PY" --version 2>&1))"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, pinned, so nothing later can pull a CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
# libtpu (TPU's compiler, matching jax) beside the environment, not in it: train_compile compile_topology=v5e-256
# points JAX at it; installed in the environment, every JAX process would try to start a TPU backend.
if [ ! -f .venv/libtpu/libtpu/libtpu.so ]; then
  .venv/bin/python -m pip install -q --no-deps --target .venv/libtpu \
    "$(.venv/bin/python -c 'from maxtext_like.training.topologies import libtpu_requirement as r; print(r())')"
fi
.venv/bin/python -c 'import torch; assert "+cpu" in torch.__version__ or not torch.cuda.is_available(), torch.__version__'
echo "$want" > "$stamp"
echo "setup.sh: done ($(.venv/bin/python -c 'import jax, flax, torch; print(f"jax {jax.__version__}, flax {flax.__version__}, torch {torch.__version__}")'))"
