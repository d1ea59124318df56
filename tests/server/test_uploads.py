"""The routes that change the store (:mod:`rootml.server.uploads`): raw, form and base64
uploads, both ``params.json`` spellings, and deletes by form field or query."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from .helpers import features, predict, reference, tarball


@pytest.mark.parametrize(
    ("compress", "header"),
    [(True, {"Content-Encoding": "gzip"}), (True, {}), (False, {})],
    ids=["gzip-by-header", "gzip-by-magic", "plain-tar"],
)
def test_raw_upload_then_json_matches_reference(client, bundles, compress, header):
    body = tarball(bundles["a"], compress=compress)
    reply = client.post("/upload", content=body, headers=header)
    assert reply.status_code == 200, reply.text
    assert reply.json()["sha256"] == hashlib.sha256(body).hexdigest()
    assert reply.json()["backend"] == "onnx"
    inputs, outputs = reference(bundles["a"])
    one = predict(client, inputs[0], keys=features(bundles["a"]))
    assert one.shape == (1,)  # TFaaS answers a flat list for one row
    np.testing.assert_allclose(one, outputs[0], atol=1e-5)
    np.testing.assert_allclose(predict(client, inputs), outputs, atol=1e-5)
    alias = client.post("/predict/json", json={"model": "m", "values": inputs[:2]})
    np.testing.assert_allclose(alias.json(), outputs[:2], atol=1e-5)


@pytest.mark.parametrize("field", ["model", "bundle"])
def test_form_upload_with_name_field_renames(client, bundles, field):
    """TFaaS clients expect the name they give to win over the tarball's folder and
    params.json: it is written into the stored params.json."""
    files = {field: ("m.tar.gz", tarball(bundles["a"], "other"), "application/gzip")}
    reply = client.post("/upload", files=files, data={"name": "renamed"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["name"] == "renamed"
    assert [m["name"] for m in client.get("/models").json()] == ["renamed"]
    assert client.get("/params/renamed").json()["name"] == "renamed"
    inputs, outputs = reference(bundles["a"])
    np.testing.assert_allclose(predict(client, inputs, model="renamed"), outputs, atol=1e-5)


def test_a_plain_tar_of_the_bundle_folder_uploads(client, bundles, tmp_path):
    """``tar czf b.tgz -C run/train bundle``: the top folder is 'bundle'; without a given
    name the model takes params.json's, with ``?name=`` that one."""
    import subprocess

    bundle = bundles["a"]
    tgz = tmp_path / "b.tgz"
    subprocess.run(["tar", "czf", str(tgz), "-C", str(bundle.parent), bundle.name], check=True)
    stated = json.loads((bundle / "params.json").read_text())["name"]
    reply = client.post("/upload", content=tgz.read_bytes())
    assert reply.status_code == 200, reply.text
    assert reply.json()["name"] == stated
    reply = client.post("/upload?name=mine", content=tgz.read_bytes())
    assert reply.status_code == 200, reply.text
    assert client.get("/params/mine").json()["name"] == "mine"
    assert sorted(m["name"] for m in client.get("/models").json()) == sorted([stated, "mine"])


def test_form_upload_base64_model_part_as_tfaas_python_client(client, bundles):
    encoded = base64.encodebytes(tarball(bundles["a"]))
    files = {"model": ("m.tar.gz", encoded, "application/octet-stream")}
    reply = client.post("/upload", files=files, headers={"Content-Encoding": "base64"})
    assert reply.status_code == 200, reply.text
    no_tar = client.post("/upload", files={"params": ("params.json", b"{}", "application/json")})
    assert no_tar.status_code == 400
    assert "no bundle tarball" in no_tar.json()["error"]


@pytest.mark.parametrize("spelling", ["camel", "snake"])
def test_both_params_spellings(client, bundles, tmp_path, spelling):
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["a"], copy)
    params = json.loads((copy / "params.json").read_text())
    drop = ("input_node", "output_node") if spelling == "camel" else ("inputNode", "outputNode")
    for key in drop:
        params.pop(key)
    (copy / "params.json").write_text(json.dumps(params))
    assert client.post("/upload", content=tarball(copy)).status_code == 200
    [listed] = client.get("/models").json()
    assert listed["inputNode"] == listed["input_node"] == "serving_default_inputs_input"
    assert listed["outputNode"] == listed["output_node"] == "StatefulPartitionedCall"


@pytest.mark.parametrize("how", ["multipart", "urlencoded", "query"])
def test_delete_by_form_field_model(served, how):
    if how == "multipart":
        reply = served.request("DELETE", "/delete", files={"model": (None, "m")})
    elif how == "urlencoded":
        reply = served.request("DELETE", "/delete", data={"model": "m"})
    else:
        reply = served.request("DELETE", "/delete", params={"model": "m"})
    assert reply.status_code == 200, reply.text
    assert served.get("/models").json() == []
    missing = served.request("DELETE", "/delete")
    assert missing.status_code == 400
    assert missing.json() == {"error": "no model name is provided: send the form field 'model'"}
