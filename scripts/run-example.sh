#!/usr/bin/env bash
# `make run`: the bundled example through the stages that exist so far: the data path and the
# model path (train, evaluate, predict). The yadage workflow and the embedded TFaaS server come
# with issues 4-5; this script then becomes `rootml run --input example/inputs/input.yml`.
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

"$(dirname "$ROOTML")/python" - "$RUN" <<'PY'
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
      f"predictions: {run / 'predictions.csv'}")
print("serving and publishing to TFaaS: not yet (issue 4)")
PY
