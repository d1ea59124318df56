"""Selections and new variables at full speed: specs + preprocess with and without them.

Side by side in one run, on one generated sample (``rootml sample``, files in the page cache),
serial, with the columns staged by specs (what the workflow does), the 52-wide comparable
rows of bench_preprocess.py:

* without: the plain data path;
* with: an event selection of four cuts, one of them on a collection (``any``), an object
  selection on the jets, three new variables (a sum over jets, the leading jet's pt, a ratio
  guarded by ``where``) and an event weight from an expression (shards then carry ``w``), all
  through rootml's expression language.

The issue's target: the run with them at least 0.8x the events/s of the run without
(MLaaS4HEP's cuts, Python strings through ``eval``, cost it 12x). Prints events/s both ways
and the ratio; asserts nothing::

    python benchmarks/bench_derived.py --events 1000000 --chunk-size 100000
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _common import COMPARABLE_CAPS, COMPARABLE_SELECTION
from bench_preprocess import IDS, sample, warm

from rootml.config import Settings, with_overrides
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.specs import file_specs

DERIVED = {
    "selection": "nJet >= 2 & HT > 100 & any(Jet_btagDeepB > 0.2) & MET_pt > 10",
    "object_selection": {"Jet": "Jet_pt > 25 & abs(Jet_eta) < 2.4"},
    "new_variables": {
        "ht_jets": "sum(Jet_pt)",
        "lead_jet_pt": "Jet_pt[0]",
        "met_over_ht": "where(HT > 0, MET_pt / HT, 0)",
    },
    "weight": "where(MET_pt > 0, 1 + 0.001 * MET_pt, 1)",  # an event weight from an expression
}


def pipeline(paths: list[Path], settings: Settings, out: Path) -> dict:
    """specs (staging columns) of every file, merge, preprocess of every chunk, serially."""
    shutil.rmtree(out, ignore_errors=True)
    columns = [out / f"columns-{i}" for i in range(len(paths))]
    t0 = time.perf_counter()
    specs = [
        file_specs(
            str(p),
            "events",
            identifiers=IDS,
            selected=settings.selected,
            columns=c,
            derived=settings.derived or None,
        )
        for p, c in zip(paths, columns, strict=True)
    ]
    t_specs = time.perf_counter() - t0
    layout = merge(specs, settings, labels=["1", "0"])
    t1 = time.perf_counter()
    preprocess(layout, range(len(layout["chunks"])), out / "shards", columns=columns)
    t_pre = time.perf_counter() - t1
    passing = sum(s.get("cutflow", {}).get("events passing", s["entries"]) for s in specs)
    return {
        "specs": t_specs,
        "preprocess": t_pre,
        "total": time.perf_counter() - t0,
        "passing": passing,
        "dim": layout["dim"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="bench-out/derived")
    args = ap.parse_args()
    out = Path(args.out)
    plain = Settings(
        tree="events",
        chunk_size=args.chunk_size,
        selected=(*COMPARABLE_SELECTION, "nJet", "Jet_btagDeepB"),
        jagged_caps=COMPARABLE_CAPS,
        nan_policy="replace",  # the leading jet of an event without one is padding
    )
    derived = with_overrides(plain, derived=DERIVED)
    paths = sample(out / "sample", args.events, args.seed)
    warm(paths)
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for _ in range(args.repeat):  # alternating, so that drifts hit both alike
        runs["without"].append(pipeline(paths, plain, out / "without"))
        runs["with"].append(pipeline(paths, derived, out / "with"))
    best = {k: min(v, key=lambda r: r["total"]) for k, v in runs.items()}
    n = args.events
    print(
        f"sample: {n:,} events in {len(paths)} files; chunk size {args.chunk_size:,}; "
        f"best of {args.repeat}, alternating"
    )
    print(
        f"\n{'':34s} {'total s':>8s} {'specs s':>8s} {'prep s':>7s} {'events/s':>10s} {'rows':>9s}"
    )
    for name, r in best.items():
        print(
            f"{'specs+preprocess ' + name + ' cuts':34s} {r['total']:8.2f} {r['specs']:8.2f} "
            f"{r['preprocess']:7.2f} {n / r['total']:10,.0f} {r['passing']:9,d}  ({r['dim']} wide)"
        )
    ratio = best["without"]["total"] / best["with"]["total"]
    print(f"\nwith / without, events read per second: {ratio:.2f}x (target >= 0.8x)")


if __name__ == "__main__":
    main()
