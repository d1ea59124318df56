#!/usr/bin/env bash
# `make run`: the bundled example through the stages that exist so far (issue 2: the data path).
# The yadage workflow, training, evaluation and the embedded TFaaS server come with issues 3-5;
# this script then becomes `rootml run --input example/inputs/input.yml`.
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
print("training, evaluation and serving: not yet (issues 3-5)")
PY
