"""Models made elsewhere (:mod:`rootml.server.convert`): a Go-TFaaS-style SavedModel without
``model.onnx`` converted to ONNX at upload when exact, TFaaS's classic form upload of a TF1
frozen graph, and what is refused or served through TensorFlow instead."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tarfile

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from rootml.server.convert import check_rows, compare

from .helpers import predict, reference, tarball


def _tar(folder, top: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=top)
    return buf.getvalue()


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    """A SavedModel as a Go TFaaS user has it: Keras's export, params.json, no model.onnx."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    net = keras.Sequential(
        [keras.Input(shape=(6,)), keras.layers.Dense(8, activation="relu"),
         keras.layers.Dense(2, activation="softmax")]
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("external") / "ext"
    net.export(str(folder))
    (folder / "params.json").write_text(json.dumps({"name": "ext", "description": "external"}))
    rows = np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32)
    expected = tf.saved_model.load(str(folder)).signatures["serving_default"]
    key = next(iter(expected.structured_input_signature[1]))
    out = next(iter(expected(**{key: tf.constant(rows)}).values())).numpy()
    return folder, rows, out


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """A TF1 frozen GraphDef (placeholder 'x' [None, 5] -> sigmoid 'y'), as TFaaS took them."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 5], name="x")
        tf.math.sigmoid(tf.matmul(x, tf.constant(w)) + tf.constant(b), name="y")
    rows = rng.normal(size=(10, 5)).astype(np.float32)
    expected = 1 / (1 + np.exp(-(rows @ w + b)))
    return graph.as_graph_def().SerializeToString(), rows, expected


def test_a_savedmodel_without_onnx_is_converted_at_upload(client, external):
    folder, rows, expected = external
    reply = client.post("/upload", content=_tar(folder, "ext"))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["backend"] == "onnx"
    assert body["converted"]["from"] == "saved_model"
    assert body["converted"]["exact"] is True
    assert body["converted"]["max_difference"] <= 1e-5
    np.testing.assert_allclose(predict(client, rows.tolist(), model="ext"), expected, atol=1e-5)


def test_a_conversion_that_would_change_answers_is_not_kept(client, bundles, tmp_path):
    """rootml's own SavedModel pads a NaN (a missing object); tf2onnx's graph of it lets the
    NaN through, the NaN rows of the check catch that, and TensorFlow serves it."""
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["a"], copy)
    (copy / "model.onnx").unlink()
    reply = client.post("/upload", content=tarball(copy))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["backend"] == "tensorflow"
    assert body["converted"]["exact"] is False
    assert body["converted"]["max_difference"] is None  # a NaN where TensorFlow pads
    inputs, outputs = reference(bundles["a"])
    np.testing.assert_allclose(predict(client, inputs), outputs, atol=1e-5)


def test_tfaas_classic_form_upload_of_a_frozen_graph(client, frozen):
    graph, rows, expected = frozen
    params = {"inputNode": "x", "outputNode": "y", "description": "TF1 graph"}
    reply = client.post(
        "/upload",
        data={"name": "graph"},
        files={
            "params": ("params.json", json.dumps(params).encode()),
            "model": ("model.pb", graph),
            "labels": ("labels.txt", b"a\nb\nc\n"),
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["backend"] == "onnx"
    assert reply.json()["converted"]["from"] == "frozen_graph"
    np.testing.assert_allclose(predict(client, rows.tolist(), model="graph"), expected, atol=1e-5)
    stored = client.get("/params/graph").json()
    assert stored["inputNode"] == "x"
    assert stored["name"] == "graph"


def test_a_frozen_graph_that_cannot_be_served_is_refused_with_the_reason(client, frozen):
    graph, _, _ = frozen
    cases = [
        ({"outputNode": "y"}, graph, "inputNode"),
        ({"inputNode": "x", "outputNode": "nope"}, graph, "'nope' is not a node"),
        ({"inputNode": "x", "outputNode": "y"}, b"\x08\x96\x01garbage" * 10, "GraphDef"),
    ]
    for params, blob, words in cases:
        reply = client.post(
            "/upload",
            data={"name": "graph"},
            files={"params": ("params.json", json.dumps(params).encode()),
                   "model": ("model.pb", blob)},
        )  # fmt: skip
        assert reply.status_code == 400, (params, reply.text)
        assert words in reply.json()["error"], reply.json()
    assert client.get("/models").json() == []
    bad_json = client.post(
        "/upload", data={"name": "g"},
        files={"params": ("params.json", b"{not json"), "model": ("model.pb", graph)},
    )  # fmt: skip
    assert bad_json.status_code == 400
    assert "params" in bad_json.json()["error"]


def test_compare_flags_shape_nan_and_size_differences():
    a = np.array([[0.5, 1.0], [np.nan, 2.0]], np.float32)
    assert compare(a, a.copy()) == 0.0
    assert compare(a, a[:1]) == float("inf")
    assert compare(a, np.nan_to_num(a)) == float("inf")  # a NaN became a number
    assert compare(a, a + 1e-3) == pytest.approx(1e-3 / 1.5, rel=1e-2)  # the largest at 0.5
    rows = check_rows(7, nan=True)
    assert rows.dtype == np.float32
    assert np.isnan(rows).any(axis=1).sum() == 16
    assert not np.isnan(check_rows(7, nan=False)).any()


def test_without_tensorflow_a_savedmodel_only_upload_is_refused_with_what_to_do(external, tmp_path):
    """The rootml/serve image has no TensorFlow: the conversion cannot run and nothing can
    serve the SavedModel, which the upload says (400), instead of a 500."""
    import subprocess
    import sys

    folder, _, _ = external
    shim = tmp_path / "shim" / "tensorflow"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('no TensorFlow in this image')\n")
    packed = tmp_path / "ext.tgz"
    packed.write_bytes(_tar(folder, "ext"))
    code = f"""
import sys
from starlette.testclient import TestClient
from rootml.server import ServerConfig
from rootml.server.app import create_app
with TestClient(create_app(ServerConfig(models={str(tmp_path / "store")!r}))) as client:
    reply = client.post("/upload", content=open({str(packed)!r}, "rb").read())
    print(reply.status_code, reply.json()["error"])
    sys.exit(0 if reply.status_code == 400 else 1)
"""
    env = {**__import__("os").environ, "PYTHONPATH": str(shim.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "no TensorFlow to convert or serve" in proc.stdout
    assert "model.onnx" in proc.stdout
