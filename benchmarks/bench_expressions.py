"""How much an expression costs beyond reading its columns: a 4-cut selection and 3 new
variables evaluated on 1M events (flat HT and njet; Jet_pt, Jet_eta, Jet_btag with ~5 jets an
event, as uproot returns them), against only converting those columns to NumPy (flat values,
jagged counts and contents).

    python benchmarks/bench_expressions.py [--events 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time

import awkward as ak
import numpy as np

from rootml.expressions import check, evaluate, parse, require_event_level

SELECTION = "njet >= 4 & HT > 300 & any(Jet_btag > 0.5) & max(abs(Jet_eta)) < 2.4"
NEW_VARIABLES = {
    "ht": "sum(Jet_pt)",
    "lead_pt": "Jet_pt[0]",
    "btag_frac": "where(HT > 0, sum(Jet_pt * (Jet_btag > 0.5)) / HT, 0)",
}


def columns(events: int) -> dict[str, ak.Array]:
    rng = np.random.default_rng(1)
    counts = rng.poisson(5, events)
    total = int(counts.sum())
    return {
        "HT": ak.Array(rng.uniform(0, 1000, events).astype(np.float32)),
        "njet": ak.Array(counts.astype(np.int32)),
        "Jet_pt": ak.unflatten(rng.exponential(40, total).astype(np.float32), counts),
        "Jet_eta": ak.unflatten(rng.normal(0, 2, total).astype(np.float32), counts),
        "Jet_btag": ak.unflatten(rng.random(total).astype(np.float32), counts),
    }


def to_numpy(cols: dict[str, ak.Array]) -> list[np.ndarray]:
    out = []
    for array in cols.values():
        if array.ndim == 1:
            out.append(ak.to_numpy(array))
        else:
            out += [ak.to_numpy(ak.num(array, axis=1)), ak.to_numpy(ak.flatten(array))]
    return out


def best(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cols = columns(args.events)
    kinds = {"HT": None, "njet": None, "Jet_pt": "Jet", "Jet_eta": "Jet", "Jet_btag": "Jet"}
    selection = parse(SELECTION, "selection")
    require_event_level(selection, check(selection, kinds), condition=True)
    variables = {name: parse(s, f"new_variables.{name}") for name, s in NEW_VARIABLES.items()}
    for expr in variables.values():
        check(expr, kinds)

    def run() -> None:
        evaluate(selection, cols)
        for expr in variables.values():
            evaluate(expr, cols)

    convert = best(lambda: to_numpy(cols), args.repeat)
    each = {
        e.source: best(lambda e=e: evaluate(e, cols), args.repeat)
        for e in [selection, *variables.values()]
    }
    total = best(run, args.repeat)
    jets = int(ak.sum(ak.num(cols["Jet_pt"])))
    print(f"{args.events:,} events, {jets:,} jets (best of {args.repeat})")
    for source, seconds in each.items():
        print(f"  {seconds * 1e3:8.1f} ms  {source}")
    print(f"selection + 3 new variables: {total * 1e3:.1f} ms")
    print(f"converting the 5 columns to NumPy: {convert * 1e3:.1f} ms")
    print(f"ratio: {total / convert:.1f}")


if __name__ == "__main__":
    main()
