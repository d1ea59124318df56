"""Many tiny entries: ``rootml specs`` + ``merge`` + ``preprocess`` of one file of N entries
holding one 4-byte branch each (an RNTuple of 100M such entries took 532 s in specs with
fixed 100k-entry steps), against a raw uproot read of the same branches, side by side.

    python benchmarks/bench_tiny_entries.py [--entries 10000000] [--format ttree|rntuple]

Prints the times and the ratio; asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import uproot

from rootml.config import Settings
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.specs import file_specs


def write(path: Path, n: int, fmt: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    block = 5_000_000
    with uproot.recreate(path) as f:
        for lo in range(0, n, block):
            size = min(block, n - lo)
            arrays = {
                "x": rng.normal(seed, 1.0, size).astype(np.float32),
                "k": rng.integers(0, 5, size).astype(np.int32),
            }
            if lo == 0:
                if fmt == "rntuple":
                    f.mkrntuple("events", arrays)
                    continue
                f.mktree("events", {k: v.dtype for k, v in arrays.items()})
            f["events"].extend(arrays)
    return path


def raw_read(path: Path) -> float:
    t0 = time.perf_counter()
    with uproot.open(path) as f:
        f["events"].arrays(["x", "k"], library="np")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--format", choices=["ttree", "rntuple"], default="ttree")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rootml-bench-tiny-"))
    try:
        files = [write(base / f"f{i}.root", args.entries // 2, args.format, i) for i in (0, 1)]
        for p in files:
            raw_read(p)  # into the page cache
        raw = sum(raw_read(p) for p in files)
        t0 = time.perf_counter()
        specs = [file_specs(str(p), "events", identifiers=()) for p in files]
        t_specs = time.perf_counter() - t0
        print(f"{args.entries:,} entries ({args.format}, 2 files, 2 branches of 4 bytes)")
        print(f"  raw uproot read       {raw:8.2f} s")
        print(f"  rootml specs          {t_specs:8.2f} s")
        for chunk in ("auto", 10_000):  # the default, and the default before 0.2 (side by side)
            layout = merge(specs, Settings(tree="events", chunk_size=chunk), labels=["1", "0"])
            out = base / f"shards-{chunk}"
            t0 = time.perf_counter()
            shards = preprocess(layout, range(len(layout["chunks"])), out)
            t_pre = time.perf_counter() - t0
            shutil.rmtree(out, ignore_errors=True)
            print(
                f"  rootml preprocess     {t_pre:8.2f} s  (chunk_size {chunk}: {len(shards)} "
                f"shards); (specs + preprocess) / raw read = {(t_specs + t_pre) / raw:.2f}"
                "  (target <= 3)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
