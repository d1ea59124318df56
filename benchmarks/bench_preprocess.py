"""Data-path throughput and memory: rootml specs + preprocess against a raw uproot read.

Measured side by side in one run, on one generated sample (``rootml sample``), with the files
in the page cache (each file is read once before timing):

* reference: ``tree.arrays(<the branches preprocess reads>)`` with uproot, one thread
  (and, for comparison, with two decompression threads);
* rootml serial: specs of every file, merge, preprocess of every chunk, one process;
* rootml scattered: the same work spread over 2 processes, as the yadage workflow scatters
  ``specs`` over files and ``preprocess`` over chunks;
* peak RSS of ``rootml preprocess`` (a subprocess) on a file and on a 10x larger one,
  at the same chunk size.

Prints events/s, on-disk MB/s and ratios; asserts nothing. Example:

    python benchmarks/bench_preprocess.py --events 1000000 --chunk-size 100000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import uproot
from _common import COMPARABLE_CAPS, COMPARABLE_SELECTION, peak_rss

from rootml.config import Settings, with_overrides
from rootml.layout import merge, write_layout
from rootml.preprocessing import preprocess
from rootml.sample import make_sample
from rootml.specs import file_specs
from rootml.storage import write_json

MLAAS4HEP_CONVERSION = (8_000, 14_000)  # events/s on 52-wide rows, 2 cores (notes/mlaas4hep.md §9)
IDS = ("run", "event", "luminosityBlock")


def sample(out: Path, events: int, seed: int) -> list[Path]:
    marker = out / "sample.json"
    if marker.exists() and json.loads(marker.read_text()) == {"events": events, "seed": seed}:
        return [out / "signal.root", out / "background.root"]
    shutil.rmtree(out, ignore_errors=True)
    result = make_sample(out, events, seed)
    marker.write_text(json.dumps({"events": events, "seed": seed}))
    return list(result.files)


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def raw_read(paths: list[Path], branches: list[str], threads: int) -> None:
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    for p in paths:
        with uproot.open(p) as f:
            f["events"].arrays(branches, decompression_executor=pool, interpretation_executor=pool)
    if pool:
        pool.shutdown()


def _specs_job(path: str, selected: tuple[str, ...] = ()) -> dict:
    return file_specs(path, "events", identifiers=IDS, selected=selected)


def _preprocess_job(args: tuple[dict, list[int], str]) -> int:
    layout, ids, out = args
    return len(preprocess(layout, ids, out))


def rootml_pipeline(paths: list[Path], settings: Settings, out: Path, procs: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if procs == 1:
        specs = [_specs_job(str(p), settings.selected) for p in paths]
    else:
        with ProcessPoolExecutor(procs) as pool:
            specs = list(
                pool.map(_specs_job, [str(p) for p in paths], [settings.selected] * len(paths))
            )
    t_specs = time.perf_counter() - t0
    layout = merge(specs, settings, labels=["1", "0"])
    ids = list(range(len(layout["chunks"])))
    t1 = time.perf_counter()
    if procs == 1:
        preprocess(layout, ids, out)
    else:
        parts = [(layout, ids[i::procs], str(out)) for i in range(procs)]
        with ProcessPoolExecutor(procs) as pool:
            list(pool.map(_preprocess_job, parts))
    t_pre = time.perf_counter() - t1
    return {
        "layout": layout,
        "specs": t_specs,
        "preprocess": t_pre,
        "total": time.perf_counter() - t0,
    }


def peak_rss_preprocess(paths: list[Path], settings: Settings, work: Path) -> int:
    """Peak RSS (bytes) of a ``rootml preprocess`` process over every chunk of ``paths``."""
    specs = [_specs_job(str(p), settings.selected) for p in paths]
    layout = merge(specs, settings, labels=["1", "0"])
    spec_path = write_layout(work / "specs.json", layout)
    args = [
        "-q",
        "preprocess",
        "--specs",
        str(spec_path),
        "--chunk",
        "all",
        "--out",
        str(work / "shards"),
    ]
    return peak_rss(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=100_000)
    ap.add_argument("--jagged-cap", default="max")
    ap.add_argument(
        "--comparable",
        action="store_true",
        help="rows like MLaaS4HEP's measured ones: 12 flat + Jet_pt/Jet_eta/Muon_pt, 52 wide",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default="bench-out/preprocess")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    out = Path(args.out)
    cap = int(args.jagged_cap) if args.jagged_cap.isdigit() else args.jagged_cap
    settings = with_overrides(Settings(tree="events"), chunk_size=args.chunk_size, jagged_cap=cap)
    if args.comparable:
        settings = with_overrides(
            settings,
            selected=COMPARABLE_SELECTION,
            jagged_caps=COMPARABLE_CAPS,
        )

    paths = sample(out / "sample", args.events, args.seed)
    disk = sum(p.stat().st_size for p in paths)
    warm(paths)
    layout = merge(
        [_specs_job(str(p), settings.selected) for p in paths], settings, labels=["1", "0"]
    )
    branches = layout["read"]
    n_flat = sum(c["kind"] == "flat" for c in layout["inputs"])
    n_jag = sum(c["kind"] == "jagged" for c in layout["inputs"])
    print(
        f"sample: {args.events:,} events in {len(paths)} files, {disk / 1e6:.1f} MB on disk; "
        f"{n_flat} flat + {n_jag} jagged branches -> rows of {layout['dim']} floats "
        f"(jagged cap {args.jagged_cap}); chunk size {args.chunk_size:,}; {os.cpu_count()} cores"
    )

    raw1 = best(lambda: raw_read(paths, branches, 1), args.repeat)
    raw2 = best(lambda: raw_read(paths, branches, 2), args.repeat)
    serial = min(
        (rootml_pipeline(paths, settings, out / "shards", 1) for _ in range(args.repeat)),
        key=lambda r: r["total"],
    )
    scattered = min(
        (rootml_pipeline(paths, settings, out / "shards", 2) for _ in range(args.repeat)),
        key=lambda r: r["total"],
    )

    n = args.events
    rows = [
        ("uproot arrays(), 1 thread (reference)", raw1, None),
        ("uproot arrays(), 2 decompression threads", raw2, None),
        ("rootml specs+preprocess, serial", serial["total"], serial),
        ("rootml specs+preprocess, scattered on 2 procs", scattered["total"], scattered),
    ]
    print(f"\n{'':47s} {'seconds':>8s} {'events/s':>11s} {'disk MB/s':>9s} {'vs raw':>7s}")
    for name, secs, detail in rows:
        print(
            f"{name:47s} {secs:8.2f} {n / secs:11,.0f} {disk / 1e6 / secs:9.1f} {raw1 / secs:7.2f}x"
        )
        if detail:
            print(
                f"{'    specs / preprocess':47s} {detail['specs']:.2f} s / {detail['preprocess']:.2f} s"
            )
    conv = n / serial["preprocess"]
    lo, hi = MLAAS4HEP_CONVERSION
    print(
        f"\npreprocess alone (serial): {conv:,.0f} events/s = {conv / hi:.0f}-{conv / lo:.0f}x "
        f"MLaaS4HEP's per-event conversion ({lo:,}-{hi:,} events/s on 52-wide rows; ours "
        f"{layout['dim']} wide)"
    )
    figures = {
        "events": n,
        "disk_bytes": disk,
        "dim": layout["dim"],
        "raw_1thread_s": raw1,
        "raw_2threads_s": raw2,
        "serial_s": serial["total"],
        "scattered_s": scattered["total"],
        "ratio_serial": raw1 / serial["total"],
        "ratio_scattered": raw1 / scattered["total"],
        "preprocess_events_per_s": conv,
    }

    if not args.skip_memory:
        small_n = args.events // 10
        small = sample(out / "sample-small", small_n, args.seed)
        # the same row layout for both files: caps fixed to the big sample's, so only the
        # number of events differs
        caps = {c["branch"]: c["cap"] for c in layout["inputs"] if c["kind"] == "jagged"}
        mem_settings = with_overrides(
            settings, chunk_size=min(args.chunk_size, small_n // 4), jagged_caps=caps
        )
        rss_small = peak_rss_preprocess(small, mem_settings, out / "mem-small")
        rss_big = peak_rss_preprocess(paths, mem_settings, out / "mem-big")
        events_small, events_big = small_n, args.events
        print(
            f"\npeak RSS of 'rootml preprocess' at chunk size {mem_settings.chunk_size:,}: "
            f"{events_small:,} events {rss_small / 2**20:.0f} MiB, {events_big:,} events "
            f"{rss_big / 2**20:.0f} MiB: {events_big / events_small:.0f}x the data needs "
            f"{rss_big / rss_small:.2f}x the memory (target <= 1.3x)"
        )
        figures.update(rss_small=rss_small, rss_big=rss_big, rss_ratio=rss_big / rss_small)
    if args.json:
        write_json(args.json, figures)


if __name__ == "__main__":
    main()
