"""Synthetic Rucio transfer messages: gzipped JSON lines like the ones MLaaS4HEP trains on.

Each line is ``{"data": {...}, "metadata": {...}}`` with the fields of a Rucio transfer
event (``activity``, ``event_type``, ``bytes``, ``file_size``, ``tf_created_at`` and the
other times in epoch milliseconds, ``created_at`` as an ISO 8601 string, ``src_rse``,
``dst_rse``, ``protocol``, ``scope``, ``name``, ...).

What makes ``activity == "Staging"`` learnable from the numbers alone: a staging transfer
recalls a file from tape, so it moves bigger files (log-normal around 4 GB, against 1 GB
with a wider spread), waits far longer between ``submitted_at`` and ``started_at`` (the tape
recall: exponential with a 1 h mean, against 2 min) and runs at a lower rate (50 MB/s
against 200 MB/s, so ``duration`` is longer). Measured on 20,000 records: ROC AUC 0.89 for ``file_size``
alone, 0.97 for ``started_at - submitted_at`` alone, 0.99 for the two together; the strings
(``src_rse`` ends in ``_TAPE`` for staging) give it away too, once strings are encoded.

Same seed, same bytes: the generator is seeded per file and gzip's header has no time and
no file name.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

ACTIVITIES = (
    "Staging",
    "Production Input",
    "Production Output",
    "User Subscriptions",
    "Data Consolidation",
    "Analysis Input",
)
#: how often each activity occurs (Staging about a quarter of the transfers)
ACTIVITY_WEIGHTS = (0.25, 0.2, 0.15, 0.15, 0.15, 0.1)
EVENT_TYPES = ("transfer-submitted", "transfer-queued", "transfer-done", "transfer-failed")
EVENT_WEIGHTS = (0.2, 0.1, 0.6, 0.1)
PROTOCOLS = ("root", "davs", "srm", "gsiftp")
DISK_RSES = ("CERN-PROD_DATADISK", "BNL-OSG2_DATADISK", "FZK-LCG2_DATADISK", "INFN-T1_DATADISK")
TAPE_RSES = ("CERN-PROD_TAPE", "BNL-OSG2_TAPE", "FZK-LCG2_TAPE")
SCOPES = ("mc23_13p6TeV", "data24_13p6TeV", "user.jdoe", "valid1")
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def write_rucio_sample(
    directory: str | Path,
    files: int = 3,
    records_per_file: int = 10000,
    seed: int = 0,
    first: int = 0,
) -> list[Path]:
    """Write ``files`` gzipped JSON lines files ``rucio-NNN.json.gz`` into ``directory``,
    numbered from ``first``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(first, first + files):
        rng = np.random.default_rng([seed, index])
        lines = _lines(_columns(rng, records_per_file, index))
        path = directory / f"rucio-{index:03d}.json.gz"
        with open(path, "wb") as raw, gzip.GzipFile("", "wb", 6, raw, mtime=0) as out:
            out.write(lines.encode())
        paths.append(path)
    return paths


def _columns(rng: np.random.Generator, n: int, index: int) -> dict[str, np.ndarray]:
    """The values of ``n`` transfers, column by column (vectorised)."""
    activity = rng.choice(len(ACTIVITIES), n, p=ACTIVITY_WEIGHTS)
    staging = activity == 0
    size = np.where(
        staging, rng.lognormal(np.log(4e9), 0.5, n), rng.lognormal(np.log(1e9), 1.0, n)
    ).astype(np.int64)
    event = rng.choice(len(EVENT_TYPES), n, p=EVENT_WEIGHTS)
    done = np.where(event == 3, (size * rng.uniform(0, 1, n)).astype(np.int64), size)
    created = START_MS + np.sort(rng.integers(0, 30 * 86_400_000, n)) + index * 3_600_000
    submitted = created + rng.exponential(5_000, n).astype(np.int64)
    wait = np.where(staging, rng.exponential(3_600_000, n), rng.exponential(120_000, n))
    started = submitted + wait.astype(np.int64)
    rate = np.where(staging, rng.lognormal(np.log(5e7), 0.3, n), rng.lognormal(np.log(2e8), 0.5, n))
    duration = np.round(size / rate, 3)
    transferred = started + (duration * 1000).astype(np.int64)
    src = np.where(
        staging,
        np.asarray(TAPE_RSES)[rng.integers(0, len(TAPE_RSES), n)],
        np.asarray(DISK_RSES)[rng.integers(0, len(DISK_RSES), n)],
    )
    return {
        "activity": np.asarray(ACTIVITIES)[activity],
        "event_type": np.asarray(EVENT_TYPES)[event],
        "bytes": done,
        "file_size": size,
        "tf_created_at": created,
        "submitted_at": submitted,
        "started_at": started,
        "transferred_at": transferred,
        "duration": duration,
        "src_rse": src,
        "dst_rse": np.asarray(DISK_RSES)[rng.integers(0, len(DISK_RSES), n)],
        "protocol": np.asarray(PROTOCOLS)[rng.integers(0, len(PROTOCOLS), n)],
        "scope": np.asarray(SCOPES)[rng.integers(0, len(SCOPES), n)],
        "name": np.char.add("EVNT.", rng.integers(10**7, 10**8, n).astype(str)),
        "checksum_adler": np.char.mod("%08x", rng.integers(0, 2**32, n)),
        "created_at": np.datetime_as_string(created.astype("datetime64[ms]"), unit="ms"),
    }


def _lines(columns: dict[str, np.ndarray]) -> str:
    """The JSON lines of the transfers (a sample writer: one json.dumps per record)."""
    names = list(columns)
    rows = zip(*(columns[k].tolist() for k in names), strict=True)
    out = []
    for row in rows:
        data = dict(zip(names, row, strict=True))
        meta = {"producer": "rucio", "timestamp": data["tf_created_at"]}
        out.append(json.dumps({"data": data, "metadata": meta}, separators=(",", ":")))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# MLaaS4HEP's Rucio example as a folder

#: the example's preprocessing(rec): the payload's sizes, the two strings it uses as 0/1,
#: and the times as durations (epoch milliseconds do not survive float32: 1.7e12 is stored to
#: the nearest 131 s), sizes and durations as logarithms
PREPROC_PY = '''\
"""MLaaS4HEP's preprocessing(rec) for Rucio transfer messages: one record in, a flat dict out
(None drops the record). The label, activity, is 1 for a staging (tape recall) transfer."""


import math


def preprocessing(rec):
    data = rec.get("data", rec)
    if data.get("event_type") == "transfer-failed":
        return None  # a failed transfer says nothing about how long a good one takes
    wait_s = (data["started_at"] - data["submitted_at"]) / 1000.0
    return {
        # sizes and times span decades: their logarithms are what a small network can use
        "log_bytes": math.log10(1.0 + data["bytes"]),
        "log_file_size": math.log10(1.0 + data["file_size"]),
        "log_wait_s": math.log10(1.0 + wait_s),
        "log_duration_s": math.log10(1.0 + data["duration"]),
        "submitted": 1 if data["event_type"] == "transfer-submitted" else 0,
        "activity": 1 if data["activity"] == "Staging" else 0,
    }
'''

#: MLaaS4HEP's params.json of the example, but all records (its nevts was 3000), rootml's
#: usual chunk (its 1000 makes a shard per thousand records) and batches of 32 (with 256, a
#: sample of a few thousand records is a few dozen steps: too few to learn from)
PARAMS = {"nevts": -1, "shuffle": True, "chunk_size": 10000, "epochs": 5, "batch_size": 32,
          "verbose": 1}  # fmt: skip
