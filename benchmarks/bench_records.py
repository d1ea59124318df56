"""Rucio-like JSON lines (gzipped) against the same records as Parquet, through RecordInput.

Writes ``--records`` transfers in ``--files`` files with ``write_rucio_sample``, converts each
to Parquet with pyarrow, then times reading every numeric field through
``RecordInput.iterate`` (``.entries`` included, which for .json.gz is one more pass), and
reading the JSON with a Python ``preprocessing(rec)`` like MLaaS4HEP's Rucio example (one call
per record, a flat dict out). Prints records/s, MB/s of file bytes and of decoded values, and
the ratios.

    python benchmarks/bench_records.py --records 1000000 --files 10
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.json as pj
import pyarrow.parquet as pq

from rootml.reading import UNSUPPORTED
from rootml.records import open_records
from rootml.rucio_sample import write_rucio_sample


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--step", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=1)
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


if __name__ == "__main__":
    main()
