#!/usr/bin/env bash
# `make run`: the bundled example through every stage as the workflow's steps call them: the
# data path, train, evaluate, predict, then `rootml serve` on 127.0.0.1 (the embedded TFaaS
# server), `rootml publish` and one served prediction. The yadage workflow (issue 5) will run
# the same commands as containerised steps: `rootml run --input example/inputs/input.yml`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTML=${ROOTML:-.venv/bin/rootml}
OUT=${OUT:-example}
RUN=${RUN:-_run}

rm -rf "$RUN"
"$ROOTML" sample --out "$OUT" --events "${EVENTS:-20000}" --seed "${SEED:-1}" > /dev/null
INPUTS="$OUT/inputs"
while read -r name; do
  "$ROOTML" fetch "$INPUTS/$name" --out "$RUN/fetch/$(basename "$name" .root)" --tree events > /dev/null
done < <(grep -v '^#' "$INPUTS/files.txt" | sed '/^[[:space:]]*$/d')
for record in "$RUN"/fetch/*/fetch.json; do
  "$ROOTML" specs "$record" --input "$INPUTS/input.yml" --out "$RUN/specs/" > /dev/null
done
"$ROOTML" merge "$RUN"/specs/specs-*.json --input "$INPUTS/input.yml" --out "$RUN/specs.json" > /dev/null
"$ROOTML" preprocess --specs "$RUN/specs.json" --chunk all --out "$RUN/shards" > /dev/null
export TF_CPP_MIN_LOG_LEVEL=2  # TensorFlow's C++ start-up chatter
"$ROOTML" train --specs "$RUN/specs.json" --shards "$RUN/shards" --input "$INPUTS/input.yml" \
  --name rootml_sample --out "$RUN/bundle" > /dev/null
"$ROOTML" evaluate --bundle "$RUN/bundle" --shards "$RUN/shards" --out "$RUN/report" > /dev/null
"$ROOTML" predict --bundle "$RUN/bundle" "$OUT/signal.root" --out "$RUN/predictions.csv" > /dev/null

# the embedded TFaaS-compatible server, on loopback only, stopped when this script ends
PORT=${PORT:-$("$(dirname "$ROOTML")/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
"$ROOTML" -q serve --models "$RUN/models" --host 127.0.0.1 --port "$PORT" --workers 1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  "$(dirname "$ROOTML")/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v2/health/live', timeout=1)" 2>/dev/null && break
  sleep 0.2
done
"$ROOTML" publish --bundle "$RUN/bundle" --url "http://127.0.0.1:$PORT" --name rootml_sample \
  --out "$RUN/receipt.json" > /dev/null
export ROOTML_URL="http://127.0.0.1:$PORT"

"$(dirname "$ROOTML")/python" - "$RUN" "$OUT" <<'PY'
import json, sys
from pathlib import Path
import h5py, numpy as np
run = Path(sys.argv[1])
layout = json.loads((run / "specs.json").read_text())
counts = np.zeros(3, dtype=int)
for shard in sorted((run / "shards").glob("*.h5")):
    with h5py.File(shard) as h5:
        counts += np.bincount(h5["split"][:], minlength=3)
print(f"data path done: {len(layout['files'])} files, {sum(f['used'] for f in layout['files']):,} events, "
      f"{layout['dim']} features, {len(layout['chunks'])} shards in {run / 'shards'}")
print(f"split train/val/test: {counts[0]:,}/{counts[1]:,}/{counts[2]:,}; layout: {run / 'specs.json'}")
metrics = json.loads((run / "report" / "metrics.json").read_text())
print(f"test AUC {metrics['auc']:.3f}, accuracy {metrics['accuracy']:.3f} on {metrics['n_test']:,} test events")
print(f"bundle: {run / 'bundle'}; report: {run / 'report' / 'report.html'}; "
      f"predictions: {run / 'predictions.csv'}; receipt: {run / 'receipt.json'}")
# one prediction from the served model: a raw event, by branch name, as a physicist sends it
import os, urllib.request
import uproot
event = uproot.open(Path(sys.argv[2]) / "signal.root")["events"].arrays(
    layout["read"], entry_stop=1).to_list()[0]
body = json.dumps({"model": "rootml_sample", "event": event}).encode()
request = urllib.request.Request(os.environ["ROOTML_URL"] + "/json", body, {"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as reply:
    served = json.loads(reply.read())
print(f"served by {os.environ['ROOTML_URL']} (model rootml_sample): first signal event -> {served}")
PY
