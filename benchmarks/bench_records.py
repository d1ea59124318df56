"""Rucio-like JSON lines (gzipped) against the same records as Parquet, through RecordInput.

Writes ``--records`` transfers in ``--files`` files with ``write_rucio_sample``, converts each
to Parquet with pyarrow, then times reading every numeric field through
``RecordInput.iterate`` (``.entries`` included, which for .json.gz is one more pass), and
reading the JSON with a Python ``preprocessing(rec)`` like MLaaS4HEP's Rucio example (one call
per record, a flat dict out). Prints records/s, MB/s of file bytes and of decoded values, and
the ratios.

Then the stages themselves, side by side with MLaaS4HEP's JSON reader on the same files:
rootml's specs (staging the columns, as the workflow does) + merge + preprocess to shards,
without a user function (the numeric fields by their dotted names) and with the Rucio
example's ``preprocessing(rec)`` (``rootml sample --kind rucio``'s preproc.py); and
MLaaS4HEP's ``JsonReader`` with that same function (without one its reader cannot flatten
the nested records), every chunk iterated as its workflow does, in its own interpreter
(``--peer-dir``/``--peer-python``, set up per ../shared/notes/peer-setup.md; skipped with
the set-up instructions when missing). The stages run once in this process and once in
``--jobs`` processes (default: one per core), specs per file and preprocess per batch of
chunks, as ``rootml run`` scatters its steps; MLaaS4HEP's reader reads the files one by one.
The floor rows only decompress and parse the files (ISA-L, pyarrow's ``read_json``): no
reader built on that parser is faster, so MLaaS4HEP / floor is the most any could gain.

    python benchmarks/bench_records.py --records 1000000 --files 10 \
        [--peer-dir /tmp/peer/mlaas4hep --peer-python /tmp/peer/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq

from rootml.config import Settings
from rootml.hooks import hook_document
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.reading import UNSUPPORTED
from rootml.records import open_records
from rootml.rucio_sample import PREPROC_PY, write_rucio_sample
from rootml.specs import file_specs

PEER_READ = """
import importlib.util, json, math, sys, time
sys.path.insert(0, sys.argv[1])
from MLaaS4HEP.reader import JsonReader
spec = importlib.util.spec_from_file_location("preproc", sys.argv[2])
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)


class Record(dict):  # its reader compares a list with dict.keys() (always unequal on Python
    def keys(self):  # 3) and then fails to json.dumps the dict_keys: give it a list
        return list(super().keys())


def preproc(rec):
    return Record(hook.preprocessing(rec))


chunk, records, t0 = int(sys.argv[3]), 0, time.perf_counter()
for path in sys.argv[4:]:
    reader = JsonReader(path, "activity", chunk_size=chunk, preproc=preproc)
    for _ in range(math.ceil(reader.nrows / chunk)):
        for _row, _label in reader.next():
            records += 1
print(json.dumps({"seconds": time.perf_counter() - t0, "records": records}))
"""


def preprocessing(rec: dict) -> dict | None:
    """MLaaS4HEP-style: pick the numbers, derive a few, label Staging; drop failed ones."""
    data = rec["data"]
    if data["event_type"] == "transfer-failed":
        return None
    return {
        "bytes": data["bytes"],
        "file_size": data["file_size"],
        "wait": (data["started_at"] - data["submitted_at"]) / 1000.0,
        "duration": data["duration"],
        "rate": data["file_size"] / max(data["duration"], 1e-3),
        "hour": (data["tf_created_at"] // 3_600_000) % 24,
        "staging": int(data["activity"] == "Staging"),
    }


def read_all(paths: list[Path], step: int, **options) -> tuple[float, int, int]:
    """Seconds, records and decoded bytes for reading every readable field of ``paths``."""
    start, records, nbytes = time.perf_counter(), 0, 0
    for path in paths:
        with open_records(path, **options) as reader:
            names = [n for n, b in reader.branches.items() if b.kind != UNSUPPORTED]
            reader.entries  # noqa: B018  part of what a stage asks for
            for _, chunk in reader.iterate(names, step):
                records += len(chunk)
                nbytes += chunk.nbytes
    return time.perf_counter() - start, records, nbytes


def peer_safe(code: str) -> str:
    """The example's hook without its ``return None`` for failed transfers: MLaaS4HEP's
    reader calls ``.keys()`` on what the hook returns (None crashes it), so both tools read
    every record here."""
    cut = '    if data.get("event_type") == "transfer-failed":\n        return None  # a failed transfer says nothing about how long a good one takes\n'
    if cut not in code:
        raise SystemExit("rootml.rucio_sample.PREPROC_PY changed: update peer_safe")
    return code.replace(cut, "")


def _specs(path: Path, staged: Path, doc: dict | None) -> dict:
    return file_specs(str(path), "events", identifiers=(), columns=staged, preprocessing=doc,
                      label_branch="activity" if doc else None)  # fmt: skip


def _preprocess(layout: dict, chunks: list[int], out: Path, staged: list[str]) -> None:
    preprocess(layout, chunks, out, columns=staged)


def stages(paths: list[Path], work: Path, hook: Path | None, jobs: int = 1) -> tuple[float, int]:
    """Seconds and events for specs (staging columns) + merge + preprocess of ``paths``; with
    ``jobs`` > 1 in that many processes, as the workflow's steps scatter: specs per file,
    preprocess per batch of chunks."""
    start = time.perf_counter()
    doc = hook_document(hook) if hook else None
    staged = [work / f"columns{i}" for i in range(len(paths))]
    with ProcessPoolExecutor(jobs) if jobs > 1 else nullcontext() as pool:
        run = pool.map if pool else map
        specs = list(run(_specs, paths, staged, [doc] * len(paths)))
        settings = Settings(tree="events", identifiers=())
        if hook:
            layout = merge(specs, settings, labels=None, label_branch="activity")
        else:
            layout = merge(specs, settings, labels=[str(i % 2) for i in range(len(paths))])
        ids = list(range(len(layout["chunks"])))
        batches = [ids[i::jobs] for i in range(jobs)] if jobs > 1 else [ids]
        columns = [str(c) for c in staged]
        list(run(_preprocess, [layout] * len(batches), batches,
                 [work / "shards"] * len(batches), [columns] * len(batches)))  # fmt: skip
    return time.perf_counter() - start, sum(f["entries"] for f in layout["files"])


def _parse(path: Path) -> int:
    """Records in ``path``, decompressed by ISA-L and parsed by pyarrow on one thread."""
    from isal import igzip

    with igzip.open(path) as handle:
        text = handle.read()
    options = pj.ReadOptions(use_threads=False, block_size=len(text) + 1)
    return pj.read_json(pa.BufferReader(text), read_options=options).num_rows


def floor(paths: list[Path], jobs: int = 1) -> tuple[float, int]:
    """Seconds and records for only decompressing and parsing ``paths`` (no statistics, no
    staging, no shards): what any reader built on pyarrow's JSON parser pays, the most the
    stages could gain."""
    start = time.perf_counter()
    with ProcessPoolExecutor(jobs) if jobs > 1 else nullcontext() as pool:
        records = sum((pool.map if pool else map)(_parse, paths))
    return time.perf_counter() - start, records


def peer_read(args, paths: list[Path], hook: Path) -> tuple[float, int] | None:
    """MLaaS4HEP's JsonReader over ``paths`` with ``hook``, in its interpreter; or None."""
    peer_src = Path(args.peer_dir or "/nonexistent") / "src" / "python"
    if not (peer_src / "MLaaS4HEP" / "reader.py").is_file() or not args.peer_python:
        print(
            "MLaaS4HEP not found: set it up per ../shared/notes/peer-setup.md and pass "
            "--peer-dir DIR (its checkout, with src/python/MLaaS4HEP) --peer-python PYTHON"
        )
        return None
    cmd = [args.peer_python, "-c", PEER_READ, str(peer_src), str(hook), str(args.step),
           *map(str, paths)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"MLaaS4HEP's reader failed: {done.stderr.strip()[-800:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return got["seconds"], got["records"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="processes for the stages as the workflow scatters them (also run in one: 1)",
    )
    parser.add_argument("--peer-dir", help="MLaaS4HEP checkout (branch uproot4)")
    parser.add_argument("--peer-python", help="the interpreter of MLaaS4HEP's virtualenv")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        json_paths = write_rucio_sample(
            Path(tmp) / "json", files=args.files, records_per_file=args.records // args.files
        )
        parquet_paths = []
        for path in json_paths:
            out = path.with_name(path.name.replace(".json.gz", ".parquet"))
            pq.write_table(pj.read_json(path), out, row_group_size=50_000)
            parquet_paths.append(out)
        print(f"wrote {args.records:,} records in {time.perf_counter() - t0:.1f} s")
        size = {
            "json.gz": sum(p.stat().st_size for p in json_paths),
            "parquet": sum(p.stat().st_size for p in parquet_paths),
        }
        runs = {
            "json.gz": read_all(json_paths, args.step, workers=args.workers),
            "parquet": read_all(parquet_paths, args.step, workers=args.workers),
            "json.gz + preprocessing(rec)": read_all(
                json_paths, args.step, workers=args.workers, preprocessing=preprocessing
            ),
        }
        for name, (seconds, records, nbytes) in runs.items():
            disk = size[name.split(" ")[0]]
            print(
                f"{name:30s} {seconds:7.2f} s  {records / seconds:12,.0f} records/s  "
                f"{disk / seconds / 1e6:7.1f} MB/s of file  {nbytes / seconds / 1e6:7.1f} MB/s "
                f"decoded  ({records:,} records, {disk / 1e6:.1f} MB on disk)"
            )
        base = runs["parquet"][0]
        print(f"json.gz / parquet time ratio: {runs['json.gz'][0] / base:.1f}")
        print(
            "json.gz with preprocessing(rec) / without: "
            f"{runs['json.gz + preprocessing(rec)'][0] / runs['json.gz'][0]:.1f}"
        )
        hook = Path(tmp) / "preproc.py"
        hook.write_text(peer_safe(PREPROC_PY))
        side = {
            "rootml specs+merge+preprocess, no user function": stages(
                json_paths, Path(tmp) / "plain", None
            ),
            "rootml specs+merge+preprocess, preprocessing(rec)": stages(
                json_paths, Path(tmp) / "hooked", hook
            ),
        }
        if args.jobs > 1:  # as rootml run scatters the steps over the files and batches
            side[f"same, no user function, {args.jobs} processes"] = stages(
                json_paths, Path(tmp) / "plain-jobs", None, args.jobs
            )
            side[f"same, preprocessing(rec), {args.jobs} processes"] = stages(
                json_paths, Path(tmp) / "hooked-jobs", hook, args.jobs
            )
        side["floor: gunzip (ISA-L) + pyarrow read_json only"] = floor(json_paths)
        if args.jobs > 1:
            side[f"floor, {args.jobs} processes"] = floor(json_paths, args.jobs)
        peer = peer_read(args, json_paths, hook)
        if peer is not None:
            side["MLaaS4HEP JsonReader, preprocessing(rec)"] = peer
        print("\nthe stages, side by side on the same .json.gz files:")
        for name, (seconds, records) in side.items():
            print(
                f"{name:52s} {seconds:7.2f} s  {records / seconds:10,.0f} records/s  "
                f"{size['json.gz'] / seconds / 1e6:6.1f} MB/s of file  ({records:,} records)"
            )
        if peer is not None:
            for name in [n for n in side if not n.startswith("MLaaS4HEP")]:
                print(f"speed of {name} / MLaaS4HEP's reader: {peer[0] / side[name][0]:.1f}x")


if __name__ == "__main__":
    main()
