#!/usr/bin/env bash
# Wheels for scripts/gpu_check.sh on a machine without network (Python 3.12, x86-64 Linux): what the GPU image
# lacks of this project's imports for the checks (polars and its runtime, pydantic and its core; PyYAML in case),
# at the versions of this checkout's .venv. Under 64 MiB. Needs PyPI (or a mirror) where it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
pins=$("$PYTHON" -c "
import importlib.metadata as m
names = ['polars', 'polars-runtime-32', 'pydantic', 'pydantic-core', 'annotated-types', 'typing-inspection', 'PyYAML']
print(' '.join(f'{n}=={m.version(n)}' for n in names))")
mkdir -p wheels
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d wheels $pins
du -sh wheels
