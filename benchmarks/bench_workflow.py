"""The workflow's own overhead and the speed-up from scattering, measured with ``rootml run``.

For each engine (local processes; Docker when an engine answers and the images exist):

- with one step at a time (``--parallel 1``): total wall time against the sum of the steps'
  own times (each step record's seconds: the step's process, or its container, from start to
  exit). The difference is what yadage, the plugin and ``rootml run`` add; divided by the
  number of steps it is the per-step overhead (goal: at most 2 s locally, 3 s with Docker).
- with two at a time (``--parallel 2``, this machine's cores): the same input again. The
  data path (fetch, specs, preprocess; scattered over the files and the chunk batches) and
  the whole run are compared with the serial run: the speed-up from scattering.
- under Docker, each step's time against the same step run locally: what starting a
  container adds to a step.

    python benchmarks/bench_workflow.py [--events 400000] [--files 4] [--engines local docker]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ROOTML = str(Path(sys.executable).parent / "rootml")
DATA_STAGES = ("fetch", "specs", "preprocess")


def make_input(folder: Path, events: int, files: int) -> Path:
    """``files`` ROOT files of the example (signal and background alternating, renamed apart)."""
    paths = []
    for i in range((files + 1) // 2):
        out = folder / f"sample{i}"
        subprocess.run(
            [
                ROOTML,
                "sample",
                "--out",
                str(out),
                "--events",
                str(2 * events // files),
                "--seed",
                str(i + 1),
            ],
            check=True,
            capture_output=True,
        )
        for kind in ("signal", "background"):
            target = folder / f"{kind}{i}.root"
            (out / f"{kind}.root").rename(target)
            paths.append(target)
    paths = paths[:files]
    doc = yaml.safe_load((ROOT / "inputs" / "input.yml").read_text())
    doc.update(
        files=[str(p) for p in paths],
        labels=[1 if p.name.startswith("signal") else 0 for p in paths],
        model=str(ROOT / "inputs" / "model.py"),
    )
    doc["data"]["chunk_size"] = 50_000
    doc["training"]["epochs"] = 1
    path = folder / "input.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(input_yml: Path, workdir: Path, engine: str, parallel: int) -> dict:
    if workdir.exists():
        shutil.rmtree(workdir)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            ROOTML,
            "run",
            "--input",
            str(input_yml),
            "--engine",
            engine,
            "--workdir",
            str(workdir),
            "--parallel",
            str(parallel),
            "--jobs",
            "4",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        check=False,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"rootml run ({engine}, parallel {parallel}) failed:\n{proc.stderr}")
    steps = json.loads((workdir / "run.json").read_text())["steps"]
    return {"wall": wall, "steps": steps}


def _t(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def span(steps: dict, stages: tuple[str, ...]) -> float:
    chosen = [s for n, s in steps.items() if n.rsplit("_", 1)[0] in stages or n in stages]
    return max(_t(s["finished"]) for s in chosen) - min(_t(s["started"]) for s in chosen)


def report(engine: str, serial: dict, parallel: dict) -> None:
    steps = serial["steps"]
    compute = sum(s["seconds"] for s in steps.values())
    overhead = serial["wall"] - compute
    print(f"\n== engine {engine}: {len(steps)} steps")
    print(
        f"  serial (--parallel 1): wall {serial['wall']:7.1f} s, steps' own time "
        f"{compute:7.1f} s, overhead {overhead:5.1f} s = {overhead / len(steps):4.2f} s/step"
    )
    for name, s in sorted(steps.items(), key=lambda kv: kv[1]["started"]):
        print(f"    {name:<14} {s['seconds']:7.2f} s")
    data_serial, data_parallel = span(steps, DATA_STAGES), span(parallel["steps"], DATA_STAGES)
    print(
        f"  scattered (--parallel 2): wall {parallel['wall']:7.1f} s "
        f"(speed-up x{serial['wall'] / parallel['wall']:.2f}); data path "
        f"{data_serial:5.1f} s -> {data_parallel:5.1f} s (x{data_serial / data_parallel:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400_000, help="events over all files")
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--engines", nargs="+", default=["local", "docker"])
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-workflow-"))
    try:
        input_yml = make_input(base / "input", args.events, args.files)
        print(f"input: {args.files} files, {args.events:,} events, {os.cpu_count()} cores")
        results = {}
        for engine in args.engines:
            if (
                engine == "docker"
                and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode
            ):
                print("\n== engine docker: skipped, no Docker engine answers")
                continue
            serial = run(input_yml, base / f"{engine}-1", engine, 1)
            parallel = run(input_yml, base / f"{engine}-2", engine, 2)
            results[engine] = serial
            report(engine, serial, parallel)
        if {"local", "docker"} <= set(results):
            local, docker = results["local"]["steps"], results["docker"]["steps"]
            extra = [docker[n]["seconds"] - local[n]["seconds"] for n in local if n in docker]
            print(
                f"\n  a container adds {sum(extra) / len(extra):4.2f} s per step on average "
                f"(docker step time - local step time, {len(extra)} steps)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
