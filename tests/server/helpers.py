"""What the server tests share: two trained bundles, the bearer token, and helpers that pack,
upload, predict and look at the model store. ``tests/test_publishing.py`` imports
:data:`TOKEN` and :func:`trained_bundles` from here too.

Nothing here imports Starlette or TensorFlow at import time, so collecting the suite without
them still works (the test modules skip themselves)."""

from __future__ import annotations

import functools
import gzip
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rootml.publishing import pack_bundle

if TYPE_CHECKING:
    from starlette.testclient import TestClient

IDS = ("run", "event", "luminosityBlock")
TOKEN = "s3cret-token-for-tests-0123456789"


@functools.cache
def trained_bundles(base: Path) -> dict:
    """Two bundles of one layout with different weights (seeds 1 and 2) trained into ``base``.

    Trained once per pytest process and folder: the session fixture ``bundles`` (conftest.py)
    and test_publishing.py's pass the same folder and get the same bundles."""
    from rootml.config import Settings
    from rootml.merging import merge
    from rootml.preprocessing import preprocess
    from rootml.sample import make_sample
    from rootml.specs import file_specs
    from rootml.training import TrainOptions, train

    files = make_sample(base / "sample", 2000, seed=4).files
    specs = [file_specs(str(f), "events", identifiers=IDS) for f in files]
    layout = merge(
        specs, Settings(tree="events", chunk_size=700, jagged_cap="p99"), labels=["1", "0"]
    )
    shards = preprocess(layout, range(len(layout["chunks"])), base / "shards")
    for key, seed in (("a", 1), ("b", 2)):
        train(
            layout,
            shards,
            base / key,
            options=TrainOptions(epochs=1, patience=0, seed=seed),
            name="rootml_model",
        )
    return {"a": base / "a", "b": base / "b", "files": [str(f) for f in files]}


def reference(bundle: Path) -> tuple[list, np.ndarray]:
    doc = json.loads((bundle / "reference.json").read_text())
    return doc["inputs"], np.asarray(doc["outputs"])


def features(bundle: Path) -> list[str]:
    return json.loads((bundle / "params.json").read_text())["features"]


def tarball(bundle: Path, name: str = "m", *, compress: bool = True) -> bytes:
    buf = io.BytesIO()
    pack_bundle(bundle, name, buf)
    return buf.getvalue() if compress else gzip.decompress(buf.getvalue())


def store_snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".lock")


def make_client(tmp_path: Path, **options) -> TestClient:
    from starlette.testclient import TestClient

    from rootml.server import ServerConfig
    from rootml.server.app import create_app

    return TestClient(create_app(ServerConfig(models=tmp_path / "store", **options)))


def predict(client, rows, model="m", **extra):
    reply = client.post("/json", json={"model": model, "values": rows, **extra})
    assert reply.status_code == 200, reply.text
    return np.asarray(reply.json())
