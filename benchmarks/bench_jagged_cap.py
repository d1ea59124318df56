"""Which jagged cap trains the best model for its width: test AUC and row width of
``rootml run`` on the samples of ``bench_padding.py``, the same events, network and seed, only
``features.jagged_cap`` changed (``max``: as wide as the busiest event; ``pNN``: the NN-th
percentile of each collection's multiplicity, the objects beyond it dropped).

    python benchmarks/bench_jagged_cap.py [--caps max p99.9 p99] [--samples bundled fourfile jagged]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from bench_padding import ROOTML, samples

SAMPLES = ["bundled", "fourfile", "jagged"]


def input_yml(folder: Path, files, labels, params: dict, net: str, settings: dict) -> Path:
    """input.yml for one of bench_padding's samples, with ``settings`` in its features."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.py").write_text(net)
    features = {"identifiers": params["identifier"], **settings}
    if params.get("selected_branches"):
        features["selected"] = params["selected_branches"]
    doc = {
        "files": [str(p.resolve()) for p in files],
        "labels": [str(n) for n in labels],
        "tree": params["branch"],
        "model": "model.py",
        "data": {"chunk_size": params["chunk_size"]},
        "features": features,
        "training": {"epochs": params["epochs"], "batch_size": params["batch_size"]},
    }
    path = folder / "input.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(path: Path, work: Path) -> tuple[float, int, dict]:
    subprocess.run(
        [ROOTML, "-q", "run", "--input", str(path), "--engine", "local", "--workdir", str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    metrics = json.loads((work / "evaluate" / "report" / "metrics.json").read_text())
    layout = json.loads((work / "merge" / "layout.json").read_text())
    caps = {e["collection"]: e["cap"] for e in layout["inputs"] if e["kind"] == "jagged"}
    shutil.rmtree(work)
    return metrics["auc"], layout["dim"], caps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caps", nargs="+", default=["max", "p99.9", "p99"])
    parser.add_argument("--samples", nargs="+", default=SAMPLES, choices=SAMPLES)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rootml-bench-cap-"))
    table = {}
    try:
        for name, (files, labels, params, net) in samples(base, args.samples).items():
            for cap in args.caps:
                folder = base / f"in-{name}-{cap}"
                path = input_yml(folder, files, labels, params, net, {"jagged_cap": cap})
                auc, dim, caps = run(path, base / f"run-{name}-{cap}")
                table[(name, cap)] = (auc, dim)
                print(f"{name:<9} cap {cap:>6}: test AUC {auc:.4f}, {dim} features, caps {caps}",
                      flush=True)  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\ntest AUC (row width) by jagged cap (same events, network and seed)")
    print(f"{'sample':<10}" + "".join(f"{c:>16}" for c in args.caps))
    for name in args.samples:
        cells = [f"{table[(name, c)][0]:.4f} ({table[(name, c)][1]})" for c in args.caps]
        print(f"{name:<10}" + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
