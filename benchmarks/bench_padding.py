"""Which padding value trains the best model: test AUC of ``rootml run`` on several samples,
the same events, network and seed, only the padding value (params.json ``nan``) changed.

Min-max scaling maps every feature to [0, 1]; a missing jet or lepton gets the padding value,
which must lie outside that range so that it cannot be mistaken for a real minimum. This
measures how far outside: the table decided rootml's default (docs/padding.md).

Samples (all written by ``rootml sample``, seeded):

- ``bundled``: the example ``make run`` trains on (2 files, 20k events, 16-1 MLP, 31 branches);
- ``fourfile``: ~12k events in 4 files with MLaaS4HEP's seed network (128-64-1 with dropout),
  its chunk of 10000 and batch of 100 (the benchmark's case A);
- ``jagged``: the bundled sample's jet, muon and electron collections only (HT and the other
  flat summaries excluded), so most of each row is padding.

    python benchmarks/bench_padding.py [--pads -1 -0.1 -0.01] [--samples bundled fourfile jagged]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOTML = str(Path(sys.executable).parent / "rootml")

SMALL_MLP = """
import keras

def model(idim):
    inputs = keras.Input(shape=(idim,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    out = keras.layers.Dense(1, activation="sigmoid")(hidden)
    net = keras.Model(inputs, out)
    net.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return net
"""

SEED_NET = """
import keras

def model(idim):
    net = keras.Sequential([
        keras.Input(shape=(idim,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    net.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3),
                loss="binary_crossentropy", metrics=["accuracy"])
    return net
"""

JAGGED_ONLY = [
    "nJet", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_btagDeepB",
    "nMuon", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge", "Muon_pfRelIso",
    "nElectron", "Electron_pt", "Electron_eta", "Electron_phi", "Electron_charge",
]  # fmt: skip


def sample(out: Path, events: int, seed: int) -> list[Path]:
    subprocess.run(
        [ROOTML, "-q", "sample", "--out", str(out), "--events", str(events), "--seed", str(seed)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return [out / "signal.root", out / "background.root"]


def make_folder(folder: Path, files: list[Path], labels: list[int], params: dict, net: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "files.txt").write_text("".join(f"{p.resolve()}\n" for p in files))
    (folder / "labels.txt").write_text("".join(f"{n}\n" for n in labels))
    (folder / "params.json").write_text(json.dumps(params, indent=1))
    (folder / "model.py").write_text(net)


def samples(base: Path, names: list[str]) -> dict[str, tuple[list[Path], list[int], dict, str]]:
    common = {
        "nevts": -1,
        "shuffle": True,
        "epochs": 5,
        "identifier": ["run", "event", "luminosityBlock"],
        "branch": "events",
        "redirector": "",
    }
    out = {}
    bundled = sample(base / "bundled", 20_000, 1)
    if "bundled" in names:
        out["bundled"] = (bundled, [1, 0], {**common, "chunk_size": 10000, "batch_size": 256},
                          SMALL_MLP)  # fmt: skip
    if "jagged" in names:
        params = {
            **common,
            "chunk_size": 10000,
            "batch_size": 256,
            "selected_branches": JAGGED_ONLY,
        }
        out["jagged"] = (bundled, [1, 0], params, SMALL_MLP)
    if "fourfile" in names:
        files = sample(base / "a0", 6000, 11) + sample(base / "a1", 6000, 12)
        for i, p in enumerate(files):  # the basenames must differ
            files[i] = p.rename(p.with_name(f"{p.stem}{i}.root"))
        params = {**common, "chunk_size": 10000, "batch_size": 100}
        out["fourfile"] = (files, [1, 0, 1, 0], params, SEED_NET)
    return out


def test_auc(folder: Path, work: Path) -> float:
    subprocess.run(
        [ROOTML, "-q", "run", "--mlaas4hep", str(folder), "--engine", "local",
         "--workdir", str(work)],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    metrics = json.loads((work / "evaluate" / "report" / "metrics.json").read_text())
    shutil.rmtree(work)
    return metrics["auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pads", type=float, nargs="+", default=[-1.0, -0.1, -0.01])
    parser.add_argument(
        "--samples", nargs="+", default=["bundled", "fourfile", "jagged"],
        choices=["bundled", "fourfile", "jagged"],
    )  # fmt: skip
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rootml-bench-padding-"))
    table = {}
    try:
        for name, (files, labels, params, net) in samples(base, args.samples).items():
            for pad in args.pads:
                folder = base / f"in-{name}-{pad}"
                make_folder(folder, files, labels, {**params, "nan": pad}, net)
                table[(name, pad)] = test_auc(folder, base / f"run-{name}-{pad}")
                print(f"{name:<9} pad {pad:>6}: test AUC {table[(name, pad)]:.4f}", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\ntest AUC by padding value (same events, network and seed)")
    print(f"{'sample':<10}" + "".join(f"{p:>10}" for p in args.pads))
    for name in args.samples:
        print(f"{name:<10}" + "".join(f"{table[(name, p)]:>10.4f}" for p in args.pads))


if __name__ == "__main__":
    main()
