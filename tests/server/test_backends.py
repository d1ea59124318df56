"""Model backends (:mod:`rootml.server.backends`): a SavedModel served through TensorFlow
when the bundle has no ``model.onnx``, and TensorFlow never imported for an ONNX bundle."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from .helpers import predict, reference, tarball


def test_savedmodel_served_through_tensorflow_without_onnx(client, bundles, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["a"], copy)
    (copy / "model.onnx").unlink()
    reply = client.post("/upload", content=tarball(copy))
    assert reply.status_code == 200, reply.text
    assert reply.json()["backend"] == "tensorflow"
    inputs, outputs = reference(bundles["a"])
    np.testing.assert_allclose(predict(client, inputs), outputs, atol=1e-5)


def test_tensorflow_is_not_imported_for_onnx_bundles(bundles, tmp_path):
    """The app in a fresh interpreter, which serves an ONNX bundle and never loads TensorFlow."""
    code = f"""
import io, json, sys
from starlette.testclient import TestClient
from rootml.publishing import pack_bundle
from rootml.server import ServerConfig
from rootml.server.app import create_app
with TestClient(create_app(ServerConfig(models={str(tmp_path / "store")!r}))) as client:
    packed = io.BytesIO()
    pack_bundle({str(bundles["a"])!r}, "m", packed)
    assert client.post("/upload", content=packed.getvalue()).status_code == 200
    rows = json.load(open({str(bundles["a"] / "reference.json")!r}))["inputs"]
    reply = client.post("/json", json={{"model": "m", "values": rows}})
    assert reply.status_code == 200, reply.text
sys.exit(3 if "tensorflow" in sys.modules else 0)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_batched_calls_fold_concurrent_requests_and_give_each_its_rows():
    import threading
    import time

    from rootml.server.backends import BatchedCalls

    sizes = []

    def slow_double(x):
        sizes.append(len(x))
        time.sleep(0.01)  # what a TensorFlow call costs, roughly
        return x * 2

    batched = BatchedCalls(slow_double, idle_s=0.2)
    results: dict[int, np.ndarray] = {}

    def client(i: int) -> None:
        for j in range(5):
            x = np.full((1 + i % 3, 2), i * 10 + j, np.float32)
            results[(i, j)] = (x, batched(x))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    for x, out in results.values():
        np.testing.assert_array_equal(out, x * 2)
    assert len(sizes) < 80  # folded: fewer calls than requests
    assert max(sizes) > 3
    time.sleep(0.5)
    assert batched.thread is None  # idle: its thread has ended
    np.testing.assert_array_equal(batched(np.ones((1, 2), np.float32)), 2 * np.ones((1, 2)))

    def broken(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        BatchedCalls(broken)(np.ones((1, 2), np.float32))


def test_a_frozen_graph_that_is_not_converted_is_served_through_tensorflow(tmp_path):
    """The TensorFlow path for a frozen graph (what serves one whose conversion is not
    exact): loaded from the folder as the store would, with its nodes from params.json."""
    import json

    import tensorflow as tf

    from rootml.server.backends import load_model

    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 2)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="inp")
        tf.nn.softmax(tf.matmul(x, tf.constant(w)), name="out")
    folder = tmp_path / "g"
    folder.mkdir()
    (folder / "model.pb").write_bytes(graph.as_graph_def().SerializeToString())
    (folder / "params.json").write_text(
        json.dumps({"name": "g", "inputNode": "inp", "outputNode": "out"})
    )
    model = load_model(folder, "g", "1")
    assert (model.backend, model.dim, model.outputs) == ("tensorflow", 3, 2)
    rows = rng.normal(size=(4, 3)).astype(np.float32)
    logits = rows @ w
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.run(rows), expected, rtol=1e-5)


def test_batched_calls_from_the_event_loop_fold_too():
    import asyncio
    import time

    from rootml.server.backends import BatchedCalls

    sizes = []

    def slow_negate(x):
        sizes.append(len(x))
        time.sleep(0.005)
        return -x

    batched = BatchedCalls(slow_negate, idle_s=0.2)

    async def many():
        xs = [np.full((1, 3), i, np.float32) for i in range(40)]
        return xs, await asyncio.gather(*(batched.acall(x) for x in xs))

    xs, outs = asyncio.run(many())
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out, -x)
    assert len(sizes) < 40

    def broken(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(BatchedCalls(broken).acall(np.ones((1, 2), np.float32)))
