#!/usr/bin/env bash
# The GPU checks (scripts/gpu_check.py: launch path with FSDP2, fp32 master weights against bf16 alone, a timed
# evaluation epoch and checkpoint of a ~0.7B model built from a config, SliCK's engine against the naive
# reference). Under 10 minutes on one GPU; exits non-zero when a check fails.
#
#   scripts/gpu_check.sh                          # on the GPUs this machine has
#   GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh     # the same checks, smaller, on 2 CPU ranks (exercises the script)
#
# What the machine lacks and this project needs (polars, pydantic: no network there) is installed from the wheels
# in wheels/ (scripts/gpu_wheels.sh fills it, < 64 MiB). MLflow is not needed: the checks call the stages
# directly. PYTHON picks the interpreter (default: python3, or .venv/bin/python when it exists).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
if ! "$PYTHON" -c "import polars, pydantic, yaml" 2>/dev/null; then
    [ -d wheels ] || { echo "gpu_check: polars/pydantic missing and no wheels/ folder (scripts/gpu_wheels.sh)"; exit 2; }
    "$PYTHON" -m pip install -q --no-index --find-links wheels polars pydantic pyyaml
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-570}" "$PYTHON" scripts/gpu_check.py
