#!/usr/bin/env bash
# `make run`: the bundled example through the whole workflow. `rootml sample` writes the
# example ROOT files (example/) that inputs/input.yml lists, then `rootml run` runs the yadage
# workflow: in Docker when an engine answers (building the step images the first time), else
# as local processes; the embedded TFaaS server (`rootml serve` on 127.0.0.1) receives the
# model; the run ends with the test AUC, the outputs and one prediction from the served model.
# ENGINE=local|docker forces an engine; RUN=DIR changes the run folder (default _run).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOTML=${ROOTML:-.venv/bin/rootml}
RUN=${RUN:-_run}

rm -rf "$RUN"
"$ROOTML" sample --out example --events "${EVENTS:-20000}" --seed "${SEED:-1}" > /dev/null
export TF_CPP_MIN_LOG_LEVEL=2  # TensorFlow's C++ start-up chatter
exec "$ROOTML" run --input inputs/input.yml --workdir "$RUN" ${ENGINE:+--engine "$ENGINE"}
