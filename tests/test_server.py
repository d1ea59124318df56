"""``rootml serve``: TFaaS, KServe V2 and TF Serving routes on real trained bundles, the model
store (re-uploads, deletes, the LRU cache, concurrent first loads), and every security rule
(tokens, bind address, size limits, hostile tarballs, names, fuzzed bodies). In-process with
Starlette's TestClient, and over a real socket on 127.0.0.1."""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import io
import json
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from starlette.testclient import TestClient

from rootml.exceptions import ConfigError
from rootml.publishing import pack_bundle
from rootml.server import ArchiveLimits, EmbeddedServer, ServerConfig
from rootml.server import auth as auth_module
from rootml.server import uploads as uploads_module
from rootml.server.app import create_app
from rootml.server.auth import check_bind
from rootml.transform import events_to_raw

IDS = ("run", "event", "luminosityBlock")
TOKEN = "s3cret-token-for-tests-0123456789"


# ------------------------------------------------------------------ bundles and helpers


def trained_bundles(base: Path) -> dict:
    """Two bundles of one layout with different weights (seeds 1 and 2) in ``base``, trained
    on the first call and reused after (test_publishing.py uses the same folder)."""
    done = base / "done.json"
    if not done.exists():
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
        done.write_text(json.dumps({"files": [str(f) for f in files]}))
    files = json.loads(done.read_text())["files"]
    return {"a": base / "a", "b": base / "b", "files": files}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict:
    return trained_bundles(tmp_path_factory.getbasetemp() / "serve-bundles")


def reference(bundle: Path) -> tuple[list, np.ndarray]:
    doc = json.loads((bundle / "reference.json").read_text())
    return doc["inputs"], np.asarray(doc["outputs"])


def features(bundle: Path) -> list[str]:
    return json.loads((bundle / "params.json").read_text())["features"]


def tarball(bundle: Path, name: str = "m", *, compress: bool = True) -> bytes:
    buf = io.BytesIO()
    pack_bundle(bundle, name, buf)
    return buf.getvalue() if compress else gzip.decompress(buf.getvalue())


def hostile(members: list[tuple[str, bytes | str | None, bytes]], *, gz: bool = True) -> bytes:
    """A tarball from (name, type, data) triples; type is a tarfile type or None for a file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind or tarfile.REGTYPE
            content = data
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data.decode()
                content = b""
            info.size = len(content) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(content) if info.size else None)
    return gzip.compress(buf.getvalue()) if gz else buf.getvalue()


def store_snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name != ".lock")


def make_client(tmp_path: Path, **options) -> TestClient:
    return TestClient(create_app(ServerConfig(models=tmp_path / "store", **options)))


@pytest.fixture
def client(tmp_path):
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def served(client, bundles):
    """A client with bundle A uploaded as model 'm'."""
    reply = client.post("/upload", content=tarball(bundles["a"]))
    assert reply.status_code == 200, reply.text
    return client


def predict(client, rows, model="m", **extra):
    reply = client.post("/json", json={"model": model, "values": rows, **extra})
    assert reply.status_code == 200, reply.text
    return np.asarray(reply.json())


# ------------------------------------------------------------------ TFaaS routes


def test_models_is_an_empty_list_then_tfaas_params(client, bundles):
    assert client.get("/models").json() == []
    assert client.post("/upload", content=tarball(bundles["a"])).status_code == 200
    [params] = client.get("/models").json()
    assert params["name"] == "m"
    assert params["inputNode"] == params["input_node"] == "serving_default_inputs_input"
    assert params["outputNode"] == params["output_node"] == "StatefulPartitionedCall"
    assert params["features"] == features(bundles["a"])
    assert params["timestamp"]


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
def test_form_upload_with_name_field(client, bundles, field):
    files = {field: ("m.tar.gz", tarball(bundles["a"], "other"), "application/gzip")}
    reply = client.post("/upload", files=files, data={"name": "renamed"})
    assert reply.status_code == 400  # params.json says 'other'
    assert "params.json names the model 'other'" in reply.json()["error"]
    files = {field: ("m.tar.gz", tarball(bundles["a"], "renamed"), "application/gzip")}
    assert client.post("/upload", files=files, data={"name": "renamed"}).status_code == 200
    assert [m["name"] for m in client.get("/models").json()] == ["renamed"]


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


def test_keys_in_any_order_are_mapped_onto_features(served, bundles):
    names = features(bundles["a"])
    inputs, outputs = reference(bundles["a"])
    order = np.random.default_rng(0).permutation(len(names))
    shuffled = {"keys": [names[i] for i in order], "values": [inputs[0][i] for i in order]}
    got = predict(served, shuffled["values"], keys=shuffled["keys"])
    np.testing.assert_allclose(got, outputs[0], atol=1e-5)
    bad = {**shuffled, "keys": ["Jet_ptt", *shuffled["keys"][1:]]}
    reply = served.post("/json", json={"model": "m", **bad})
    assert reply.status_code == 400
    assert "'Jet_ptt'" in reply.json()["error"]
    assert "closest" in reply.json()["error"]
    reply = served.post("/json", json={"model": "m", "keys": names[:3], "values": inputs[0]})
    assert reply.status_code == 400
    assert "names 3 features but model 'm' takes 124" in reply.json()["error"]
    twice = [names[0], *names[:-1]]
    reply = served.post("/json", json={"model": "m", "keys": twice, "values": inputs[0]})
    assert "twice" in reply.json()["error"]


def test_named_events_go_through_the_specs(served, bundles):
    from rootml.layout import load_layout

    layout = load_layout(bundles["a"] / "layout.json")
    kinds = {c["branch"]: c["kind"] for c in layout["inputs"]}
    names = [n for n in layout["read"] if n != layout["labels"]["branch"]]
    rng = np.random.default_rng(3)
    events = [
        {
            n: (
                [float(v) for v in rng.exponential(40.0, rng.integers(0, 30))]
                if kinds[n] == "jagged"
                else float(rng.normal(10.0, 3.0))
            )
            for n in names
        }
        for _ in range(5)
    ]
    raw = events_to_raw(events, layout)
    expected = predict(served, np.where(np.isnan(raw), None, raw.astype(float)).tolist())
    one = served.post("/json", json={"model": "m", "event": events[0]})
    np.testing.assert_allclose(one.json(), expected[0], atol=1e-6)
    many = served.post("/json", json={"model": "m", "events": events})
    np.testing.assert_allclose(many.json(), expected, atol=1e-6)
    bad = served.post("/json", json={"model": "m", "event": {**events[0], "Jet_ptt": [1.0]}})
    assert bad.status_code == 400
    assert "unknown branch 'Jet_ptt'" in bad.json()["error"]


def test_params_routes_and_default_model(served, bundles):
    raw = served.get("/params/m")
    assert raw.status_code == 200
    assert raw.json()["features"] == features(bundles["a"])
    inputs, outputs = reference(bundles["a"])
    # the last upload is the default model, as in TFaaS
    np.testing.assert_allclose(
        served.post("/json", json={"values": inputs[0]}).json(), outputs[0], atol=1e-5
    )
    assert served.post("/params", json={"name": "nope"}).status_code == 404
    assert served.post("/params", json={"name": "m"}).json() == {"current": "m"}
    assert served.get("/params/nope").status_code == 404


def test_status_has_tfaas_fields(served):
    served.get("/models")
    doc = served.get("/status").json()
    for key in ("NGo", "Memory", "Load", "CPU", "Uptime", "getRequests", "postRequests"):
        assert key in doc
    assert doc["getRequests"] >= 1
    assert doc["postRequests"] >= 1
    assert doc["models"] == ["m"]


# ------------------------------------------------------------------ KServe V2 and TF Serving


def test_v2_health_metadata_and_infer(served, bundles):
    inputs, outputs = reference(bundles["a"])
    assert served.get("/v2/health/live").json() == {"live": True}
    assert served.get("/v2/health/ready").json() == {"ready": True}
    assert "binary_tensor_data" in served.get("/v2").json()["extensions"]
    meta = served.get("/v2/models/m").json()
    assert meta["inputs"] == [{"name": "inputs_input", "datatype": "FP32", "shape": [-1, 124]}]
    assert meta["outputs"][0]["name"] == "scores"
    assert served.get("/v2/models/m/ready").json() == {"name": "m", "ready": True}
    assert served.get("/v2/models/m/versions/1/ready").status_code == 200
    assert served.get("/v2/models/m/versions/2").status_code == 404
    assert served.get("/v2/models/nope/ready").status_code == 404
    for data in (inputs[:4], [v for row in inputs[:4] for v in row]):  # nested and flat
        body = {
            "id": "r1",
            "inputs": [
                {"name": "inputs_input", "shape": [4, 124], "datatype": "FP32", "data": data}
            ],
        }
        reply = served.post("/v2/models/m/versions/1/infer", json=body).json()
        assert reply["id"] == "r1"
        [out] = reply["outputs"]
        assert out["shape"] == [4, 1]
        assert out["datatype"] == "FP32"
        np.testing.assert_allclose(np.reshape(out["data"], (4, 1)), outputs[:4], atol=1e-5)
    wrong = served.post(
        "/v2/models/m/infer",
        json={"inputs": [{"name": "x", "shape": [1, 124], "datatype": "FP32", "data": inputs[0]}]},
    )
    assert wrong.status_code == 400
    assert "takes 'inputs_input'" in wrong.json()["error"]
    shape = served.post(
        "/v2/models/m/infer",
        json={
            "inputs": [
                {
                    "name": "inputs_input",
                    "shape": [1, 12],
                    "datatype": "FP32",
                    "data": inputs[0][:12],
                }
            ]
        },
    )
    assert shape.status_code == 400


def test_v2_binary_tensor_extension(served, bundles):
    inputs, outputs = reference(bundles["a"])
    x = np.array([[np.nan if v is None else v for v in r] for r in inputs], dtype="<f4")
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "inputs_input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "scores", "parameters": {"binary_data": True}}],
        }
    ).encode()
    reply = served.post(
        "/v2/models/m/infer",
        content=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert reply.status_code == 200, reply.text
    cut = int(reply.headers["inference-header-content-length"])
    meta = json.loads(reply.content[:cut])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 4 * len(x)
    got = np.frombuffer(reply.content[cut:], dtype="<f4").reshape(meta["outputs"][0]["shape"])
    np.testing.assert_allclose(got, outputs, atol=1e-5)
    short = served.post(
        "/v2/models/m/infer",
        content=head + x.tobytes()[:100],
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert short.status_code == 400
    assert "binary_data_size" in short.json()["error"]


def test_tf_serving_alias(served, bundles):
    inputs, outputs = reference(bundles["a"])
    status = served.get("/v1/models/m").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    rows = served.post("/v1/models/m:predict", json={"instances": inputs[:3]}).json()
    np.testing.assert_allclose(rows["predictions"], outputs[:3], atol=1e-5)
    named = served.post(
        "/v1/models/m:predict", json={"instances": [{"inputs_input": r} for r in inputs[:2]]}
    ).json()
    np.testing.assert_allclose(named["predictions"], outputs[:2], atol=1e-5)
    cols = served.post("/v1/models/m/versions/1:predict", json={"inputs": inputs[:2]}).json()
    np.testing.assert_allclose(cols["outputs"], outputs[:2], atol=1e-5)
    both = served.post("/v1/models/m:predict", json={"instances": inputs[:1], "inputs": inputs[:1]})
    assert both.status_code == 400
    meta = served.get("/v1/models/m/metadata").json()
    assert (
        "inputs_input"
        in meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    )


# ------------------------------------------------------------------ the model store


def test_a_restarted_server_removes_uploads_cut_short_by_a_dead_server(tmp_path, caplog):
    from rootml.server.store import _HOST

    staging = tmp_path / "store" / ".staging"
    staging.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cut = staging / f"{_HOST}-{dead.pid}-{'a' * 32}"
        busy = staging / f"{_HOST}-{alive.pid}-{'b' * 32}"
        other = staging / f"otherhost-{dead.pid}-{'c' * 32}"  # a shared store's: not judged
        for entry in (cut, busy, other):
            (entry / "variables").mkdir(parents=True)
            (entry / "variables" / "data").write_bytes(b"x" * 2**20)
        with caplog.at_level("WARNING", logger="rootml.server.store"), make_client(tmp_path):
            pass
        assert not cut.exists()  # at once, not after an hour
        assert busy.exists()
        assert other.exists()
        said = [r.getMessage() for r in caplog.records if str(cut) in r.getMessage()]
        assert said
        assert f"pid {dead.pid}" in said[0]
        assert "1.0 MiB" in said[0]
    finally:
        alive.kill()
        alive.wait()


def test_reupload_serves_new_weights_at_once_and_delete(served, bundles, tmp_path):
    inputs, out_a = reference(bundles["a"])
    _, out_b = reference(bundles["b"])
    assert reference(bundles["b"])[0] == inputs  # same rows, other weights
    assert np.abs(out_a - out_b).max() > 1e-4
    np.testing.assert_allclose(predict(served, inputs), out_a, atol=1e-5)
    assert served.post("/upload", content=tarball(bundles["b"])).status_code == 200
    np.testing.assert_allclose(predict(served, inputs), out_b, atol=1e-5)
    store = tmp_path / "store"
    assert len(list((store / ".versions").iterdir())) == 1  # the old version is gone
    assert not list((store / ".staging").iterdir())
    assert served.delete("/delete/m").json() == {"deleted": "m"}
    gone = served.post("/json", json={"model": "m", "values": inputs[0]})
    assert gone.status_code == 404
    assert "no model named 'm'" in gone.json()["error"]
    assert served.delete("/delete/m").status_code == 404
    assert not list((store / ".versions").iterdir())


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


def test_concurrent_first_requests_load_once(client, bundles, tmp_path):
    # a folder put into the store by hand (as MLaaS4HEP's server does) is found and loaded
    shutil.copytree(bundles["a"], tmp_path / "store" / "rootml_model")
    inputs, outputs = reference(bundles["a"])
    store = client.app.state.store
    assert store.loads == 0
    body = {"model": "rootml_model", "values": inputs}
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda _: client.post("/json", json=body), range(32)))
    assert {r.status_code for r in replies} == {200}
    for r in replies:
        np.testing.assert_allclose(r.json(), outputs, atol=1e-5)
    assert store.loads == 1


def test_lru_cache_evicts_and_reloads(tmp_path, bundles):
    inputs, out_a = reference(bundles["a"])
    _, out_b = reference(bundles["b"])
    with make_client(tmp_path, cache_size=1) as c:
        c.post("/upload", content=tarball(bundles["a"], "one"))
        c.post("/upload", content=tarball(bundles["b"], "two"))
        assert c.app.state.store.cached() == ["two"]
        np.testing.assert_allclose(predict(c, inputs, "one"), out_a, atol=1e-5)
        assert c.app.state.store.cached() == ["one"]
        np.testing.assert_allclose(predict(c, inputs, "two"), out_b, atol=1e-5)


def test_models_on_disk_at_startup_are_preloaded(tmp_path, bundles):
    with make_client(tmp_path) as c:
        c.post("/upload", content=tarball(bundles["a"]))
    (tmp_path / "store" / "junk").mkdir()  # a folder without params.json: skipped, not a 500
    with make_client(tmp_path) as c:
        assert c.app.state.store.cached() == ["m"]
        assert [m["name"] for m in c.get("/models").json()] == ["m"]


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


def test_openapi_describes_every_route(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    routes = {r.path for r in client.app.routes}
    assert routes <= set(doc["paths"])
    for path in ("/upload", "/delete", "/delete/{name}", "/params"):
        op = next(iter(doc["paths"][path].values()))
        assert op["security"] == [{"bearer": []}]
        assert "401" in op["responses"]


# ------------------------------------------------------------------ security


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def test_token_is_required_for_every_mutation(tmp_path, token_file, bundles, monkeypatch):
    compared = []
    real = auth_module.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    body = tarball(bundles["a"])
    good = {"Authorization": f"Bearer {TOKEN}"}
    with make_client(tmp_path, token_file=token_file) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            calls = [
                c.post("/upload", content=body, headers=headers),
                c.request("DELETE", "/delete/m", headers=headers),
                c.request("DELETE", "/delete", params={"model": "m"}, headers=headers),
                c.post("/params", json={"name": "m"}, headers=headers),
            ]
            for reply in calls:
                assert reply.status_code == 401, reply.text
                assert reply.headers["www-authenticate"].startswith("Bearer")
                assert reply.json()["error"]
        assert compared  # the wrong token went through the constant-time comparison
        assert c.get("/models").json() == []
        assert c.post("/upload", content=body, headers=good).status_code == 200
        assert c.post("/params", json={"name": "m"}, headers=good).status_code == 200
        assert c.get("/models").status_code == 200  # reads stay open
        assert c.delete("/delete/m", headers=good).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_non_loopback_bind_without_token_is_refused(host, tmp_path, token_file):
    with pytest.raises(ConfigError, match=r"refusing to serve on .* without a token"):
        check_bind(host, None)
    check_bind(host, TOKEN)
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(loopback, None)


def test_cli_refuses_public_bind_without_token(tmp_path):
    rootml = shutil.which("rootml", path=str(Path(sys.executable).parent)) or "rootml"
    proc = subprocess.run(
        [rootml, "serve", "--models", str(tmp_path / "s"), "--host", "0.0.0.0", "--port", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "refusing to serve on 0.0.0.0 without a token" in proc.stderr
    assert "--token-file" in proc.stderr


def test_request_size_limits_answer_413(tmp_path, bundles):
    with make_client(tmp_path, max_request_bytes=4096, max_upload_bytes=4096) as c:
        reply = c.post("/json", json={"model": "m", "values": [0.5] * 2000})
        assert reply.status_code == 413
        assert "4096-byte limit" in reply.json()["error"]
        reply = c.post("/upload", content=tarball(bundles["a"]))
        assert reply.status_code == 413
        files = {"model": ("m.tgz", tarball(bundles["a"]), "application/gzip")}
        assert c.post("/upload", files=files).status_code == 413
        assert store_snapshot(tmp_path / "store") == [".versions"]


def test_body_limit_is_enforced_while_streaming(tmp_path):
    """Over a real socket: the 413 comes back before the client has sent the whole body."""
    limit = 64 * 1024
    config = ServerConfig(models=tmp_path / "store", port=0, max_upload_bytes=limit)
    with EmbeddedServer(config) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                b"Content-Type: application/octet-stream\r\n\r\n"
            )
            chunk = b"\0" * 16384
            sent = 0
            for _ in range(6):  # 96 KiB of chunks, never the terminating zero chunk
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            reply = b""
            while b"}" not in reply:  # the JSON error body may come in a second segment
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
            reply = reply.decode("latin-1")
        assert sent > limit
        assert reply.startswith("HTTP/1.1 413"), reply[:200]
        assert "byte limit" in reply
    assert store_snapshot(tmp_path / "store") == [".versions"]


def _many(n: int) -> list:
    return [("m/", tarfile.DIRTYPE, b"")] + [(f"m/f{i}", None, b"") for i in range(n)]


HOSTILE = {
    "absolute path": ([("/m/params.json", None, b"{}")], 400, "absolute path"),
    "dot-dot": ([("m/", tarfile.DIRTYPE, b""), ("m/../../evil", None, b"x")], 400, "'..'"),
    "symlink": (
        [("m/", tarfile.DIRTYPE, b""), ("m/link", tarfile.SYMTYPE, b"/etc/passwd")],
        400,
        "symbolic link",
    ),
    "hardlink": (
        [("m/", tarfile.DIRTYPE, b""), ("m/hard", tarfile.LNKTYPE, b"/etc/passwd")],
        400,
        "hard link",
    ),
    "char device": (
        [("m/", tarfile.DIRTYPE, b""), ("m/dev", tarfile.CHRTYPE, b"")],
        400,
        "a device",
    ),
    "block device": (
        [("m/", tarfile.DIRTYPE, b""), ("m/blk", tarfile.BLKTYPE, b"")],
        400,
        "a device",
    ),
    "fifo": ([("m/", tarfile.DIRTYPE, b""), ("m/fifo", tarfile.FIFOTYPE, b"")], 400, "a FIFO"),
    "two top-level folders": (
        [("m/a", None, b"x"), ("n/b", None, b"y")],
        400,
        "more than one top-level",
    ),
    "top-level file": ([("params.json", None, b"{}")], 400, "is a file"),
    "backslash": ([("m/a\\b", None, b"x")], 400, "backslash"),
    "bad model name": ([("bad-name/params.json", None, b"{}")], 400, "is not allowed"),
    "file inside a file": ([("m/a", None, b"x"), ("m/a/b", None, b"y")], 400, "inside a file"),
    "duplicate member": ([("m/a", None, b"x"), ("m/a", None, b"y")], 400, "listed twice"),
    "oversized member": ([("m/big", None, b"\0" * 300_000)], 413, "per file"),
    "too many members": (_many(60), 413, "more than 50 members"),
}


@pytest.fixture
def strict(tmp_path, monkeypatch):
    """A server with small archive limits; fails the test if extraction ever starts."""
    extracted = []
    real = uploads_module.extract_tarball

    def spy(*args, **kwargs):
        extracted.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(uploads_module, "extract_tarball", spy)
    limits = ArchiveLimits(max_members=50, max_member_bytes=200_000, max_unpacked_bytes=1_000_000)
    with make_client(tmp_path, archive=limits) as c:
        c.extracted = extracted
        yield c


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarballs_rejected_before_writing(strict, tmp_path, case):
    members, status, message = HOSTILE[case]
    before = store_snapshot(tmp_path / "store")
    reply = strict.post("/upload", content=hostile(members))
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]
    assert strict.extracted == []  # rejected by the scan, before any file was written
    assert store_snapshot(tmp_path / "store") == before


def test_gzip_bombs_are_stopped_while_reading(strict, tmp_path):
    before = store_snapshot(tmp_path / "store")
    # 10 MB of zeros declared in one member: rejected from its header, never inflated
    declared = hostile([("m/zeros", None, b"\0" * 10_000_000)])
    assert len(declared) < 20_000
    assert strict.post("/upload", content=declared).status_code == 413
    # 3,000 empty members: each header is 512 bytes, 1.5 MB inflated from a few KB, and
    # nothing declared: the cap on inflated bytes stops it while it is being read
    limits = ArchiveLimits(
        max_members=10_000, max_member_bytes=200_000, max_unpacked_bytes=1_000_000
    )
    with make_client(tmp_path / "other", archive=limits) as c:
        bomb = hostile(_many(3000))
        assert len(bomb) < 50_000
        reply = c.post("/upload", content=bomb)
        assert reply.status_code == 413
        assert "unpacks to more than 1000000 bytes" in reply.json()["error"]
    assert strict.extracted == []
    assert store_snapshot(tmp_path / "store") == before


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"", {}, 400, "empty"),
        (b"not a tarball at all" * 40, {}, 400, "not a tar archive"),
        (b"\x1f\x8b\x08\x00garbage-after-magic", {}, 400, "gzip"),
        (b"BZh91AY&SY" + b"\0" * 100, {}, 415, "bzip2"),
        (b"PK\x03\x04" + b"\0" * 100, {}, 415, "zip"),
        (b"plain", {"Content-Encoding": "gzip"}, 400, "not gzip data"),
        (b"x", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ],
    ids=["empty", "not-tar", "corrupt-gzip", "bzip2", "zip", "lying-encoding", "brotli"],
)
def test_broken_uploads_are_client_errors(strict, body, headers, status, message):
    reply = strict.post("/upload", content=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


@pytest.mark.parametrize("name", ["../evil", "a-b", "x" * 65, "", "caf\u00e9", "a b"])
def test_model_names_are_restricted(served, bundles, name):
    if name:
        reply = served.post(
            "/upload", files={"model": ("m.tgz", tarball(bundles["a"]), "x")}, data={"name": name}
        )
        assert reply.status_code == 400
        assert "[A-Za-z0-9_]{1,64}" in reply.json()["error"]
    reply = served.post("/json", json={"model": name or 5, "values": [1.0]})
    assert reply.status_code in (400, 404)


def test_no_route_serves_a_file_by_path(served):
    for path in (
        "/data?model=/etc/passwd",
        "/download/m/params.json",
        "/params/..%2F..%2Fetc%2Fpasswd",
        "/params/%2e%2e",
    ):
        reply = served.get(path)
        assert reply.status_code in (400, 404), path
        assert "root:" not in reply.text
        assert "error" in reply.json()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"model": "nope", "values": [1]}', 404, "no model named 'nope'"),
        (b'{"model": "m", "values": [1, 2, 3]}', 400, "takes 124 features"),
        (b'{"model": "m", "values": ["a", "b"]}', 400, "numbers or null"),
        (b'{"model": "m", "values": [[1, 2], [3]]}', 400, "equally long rows"),
        (b'{"model": "m", "values": []}', 400, "non-empty list"),
        (b'{"model": "m", "values": [1e39]}', 400, "float32 range"),
        (b'{"model": "m"}', 400, "needs 'values'"),
        (b'{"model": "m", "values": {"a": 1}}', 400, "non-empty list"),
        (b'{"model": "m", "event": [1, 2]}', 400, "must be a JSON object"),
        (b'{"model": "m", "events": []}', 400, "non-empty list of objects"),
    ],
)
def test_client_mistakes_are_4xx_json(served, body, status, message):
    reply = served.post("/json", content=body)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


def test_unknown_routes_and_methods_answer_json(served):
    assert served.get("/nope").status_code == 404
    assert "error" in served.get("/nope").json()
    reply = served.get("/json")
    assert reply.status_code == 405
    assert "error" in reply.json()


# ------------------------------------------------------------------ fuzzing


@pytest.fixture(scope="module")
def fuzz_client(bundles, tmp_path_factory):
    with TestClient(create_app(ServerConfig(models=tmp_path_factory.mktemp("fuzz")))) as c:
        assert c.post("/upload", content=tarball(bundles["a"])).status_code == 200
        yield c


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    ["model", "values", "keys", "event", "events", "inputs", "outputs", "instances", "id",
     "name", "parameters", "shape", "datatype", "data", "signature_name"]
)  # fmt: skip
NEAR = st.dictionaries(KEYS, JSON | st.just("m") | st.just("inputs_input"), max_size=6)
TENSOR = st.fixed_dictionaries(
    {"name": st.just("inputs_input") | st.text(max_size=4), "shape": st.lists(st.integers(-2, 200), max_size=3),
     "datatype": st.sampled_from(["FP32", "INT8", "BYTES", "BOOL"]) | JSON, "data": JSON},
    optional={"parameters": st.dictionaries(st.sampled_from(["binary_data_size", "binary_data"]), JSON)},
)  # fmt: skip
ROUTES = [
    "/json",
    "/predict/json",
    "/v2/models/m/infer",
    "/v1/models/m:predict",
    "/params",
    "/upload",
    "/delete",
]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from(ROUTES),
    doc=JSON | NEAR | st.fixed_dictionaries({"inputs": st.lists(TENSOR, max_size=2)}),
)
def test_fuzzed_json_bodies_never_cause_5xx(fuzz_client, route, doc):
    method = "DELETE" if route == "/delete" else "POST"
    reply = fuzz_client.request(method, route, content=json.dumps(doc).encode())
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert isinstance(reply.json()["error"], str)


@settings(max_examples=80, deadline=None)
@given(
    route=st.sampled_from(ROUTES),
    body=st.binary(max_size=300),
    header=st.sampled_from(["", "0", "-1", "abc", "5", "999999"]),
    ctype=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "text/plain",
        ]
    ),
)
def test_fuzzed_raw_bodies_never_cause_5xx(fuzz_client, route, body, header, ctype):
    headers = {"Content-Type": ctype}
    if header:
        headers["Inference-Header-Content-Length"] = header
    method = "DELETE" if route == "/delete" else "POST"
    reply = fuzz_client.request(method, route, content=body, headers=headers)
    assert reply.status_code < 500, reply.text


@settings(max_examples=60, deadline=None)
@given(
    name=st.text(max_size=20),
    route=st.sampled_from(
        [
            "/params/{}",
            "/v2/models/{}",
            "/v2/models/{}/ready",
            "/v1/models/{}",
            "/v1/models/{}/metadata",
        ]
    ),
)
def test_fuzzed_model_names_in_paths(fuzz_client, name, route):
    from urllib.parse import quote

    reply = fuzz_client.get(route.format(quote(name, safe="")))
    assert reply.status_code < 500
    if reply.status_code >= 400:
        assert "error" in reply.json()


# ------------------------------------------------------------------ over a real socket


def test_real_socket_round_trip_and_concurrent_reupload(tmp_path, bundles):
    import urllib.request

    from rootml.client import Client

    inputs, out_a = reference(bundles["a"])
    _, out_b = reference(bundles["b"])
    with EmbeddedServer(ServerConfig(models=tmp_path / "store", port=0)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        client = Client(server.url)
        packed = {}
        for key in "ab":
            packed[key] = tmp_path / f"{key}.tgz"
            packed[key].write_bytes(tarball(bundles[key]))
        client.upload(packed["a"])
        np.testing.assert_allclose(
            client.predict("m", np.array(inputs, dtype=float), None), out_a, atol=1e-5
        )
        failures = []
        stop = threading.Event()

        def hammer():
            while not stop.is_set():
                try:
                    got = client.predict("m", np.array(inputs[:2], dtype=float), None)
                except Exception as err:  # noqa: BLE001  # any failure is recorded
                    failures.append(repr(err))
                    return
                if not (
                    np.allclose(got, out_a[:2], atol=1e-5) or np.allclose(got, out_b[:2], atol=1e-5)
                ):
                    failures.append(f"mixed outputs {got.tolist()}")

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for key in "babab":
            client.upload(packed[key])
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        np.testing.assert_allclose(
            client.predict("m", np.array(inputs, dtype=float), None), out_b, atol=1e-5
        )
        with urllib.request.urlopen(server.url + "/v2/health/live") as reply:
            assert json.load(reply) == {"live": True}
