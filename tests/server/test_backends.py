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
