"""What clients nobody on the project wrote send: NVIDIA's tritonclient (HTTP, over a real
socket on 127.0.0.1) with NaN tokens, compressed bodies, the model configuration, the
repository and statistics extensions; TF Serving's REST spellings; the TFaaS ``name`` key."""

from __future__ import annotations

import gzip
import importlib.util
import json
import urllib.request
import zlib

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from rootml.server import EmbeddedServer, ServerConfig

from .helpers import TOKEN, make_client, predict, reference, tarball


@pytest.fixture(scope="module")
def triton(tmp_path_factory, bundles):
    """A real server with bundle A as model 'm', and tritonclient's HTTP client for it."""
    http = pytest.importorskip("tritonclient.http")
    store = tmp_path_factory.mktemp("triton")
    with make_client(store) as c:
        assert c.post("/upload", content=tarball(bundles["a"])).status_code == 200
    with EmbeddedServer(ServerConfig(models=store / "store", port=0)) as server:
        yield http, http.InferenceServerClient(server.url.removeprefix("http://")), server


def _infer(http, client, rows, *, binary, **options):
    meta = client.get_model_metadata("m")  # as a client finds the tensors' names
    tensor = http.InferInput(meta["inputs"][0]["name"], list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    out = http.InferRequestedOutput(meta["outputs"][0]["name"], binary_data=binary)
    result = client.infer("m", [tensor], outputs=[out], **options)
    return result.as_numpy(meta["outputs"][0]["name"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_tritonclient_infer_with_nan_and_compression_matches_onnx(
    triton, bundles, binary, compression
):
    http, client, _ = triton
    inputs, expected = reference(bundles["a"])
    rows = np.asarray(inputs, np.float32)[:8].copy()
    rows[0, -1] = np.nan  # tritonclient writes the NaN token for binary_data=False
    got = _infer(
        http, client, rows, binary=binary,
        request_compression_algorithm=compression, response_compression_algorithm=compression,
    )  # fmt: skip
    np.testing.assert_allclose(got[1:], expected[1:8], rtol=1e-6, atol=1e-7)
    assert np.isfinite(got[0]).all()  # the NaN became padding, not a NaN score


def test_tritonclient_model_config_repository_and_statistics(triton, bundles):
    http, client, server = triton
    inputs, _ = reference(bundles["a"])
    _infer(http, client, np.asarray(inputs[:8], np.float32), binary=True)
    config = client.get_model_config("m")
    meta = client.get_model_metadata("m")
    assert config["name"] == "m"
    assert config["input"][0]["name"] == meta["inputs"][0]["name"]
    assert config["input"][0]["dims"] == meta["inputs"][0]["shape"]
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    index = client.get_model_repository_index()
    assert {"name": "m", "version": "1", "state": "READY"} in index
    stats = client.get_inference_statistics("m")["model_stats"][0]
    assert stats["name"] == "m"
    assert stats["inference_count"] >= 8
    assert stats["inference_stats"]["success"]["count"] == stats["execution_count"]
    client.unload_model("m")
    ready_only = urllib.request.Request(
        server.url + "/v2/repository/index", data=b'{"ready": true}', method="POST"
    )
    with urllib.request.urlopen(ready_only, timeout=10) as reply:
        assert json.loads(reply.read()) == []
    assert client.get_model_repository_index()[0]["state"] == "UNAVAILABLE"
    client.load_model("m")
    assert client.is_model_ready("m")


def test_repository_changes_need_the_token(tmp_path, token_file, bundles):
    with make_client(tmp_path, token_file=token_file) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/upload", content=tarball(bundles["a"]), headers=auth).status_code == 200
        assert c.post("/v2/repository/models/m/unload").status_code == 401
        assert c.post("/v2/repository/models/m/unload", headers=auth).status_code == 200
        assert c.post("/v2/repository/models/nope/load", headers=auth).status_code == 404
        assert c.get("/v2/models/nope/stats").status_code == 404
        assert c.get("/v2/models/stats").json() == {"model_stats": []}  # nothing run yet


def test_compressed_and_non_finite_bodies(served, bundles):
    inputs, expected = reference(bundles["a"])
    body = json.dumps({"model": "m", "values": inputs[:3]}).encode()
    for encoding, data in [
        ("gzip", gzip.compress(body)),
        ("deflate", zlib.compress(body)),
        ("deflate", zlib.compress(body, wbits=-15)),  # raw deflate, as some clients send it
    ]:
        reply = served.post("/json", content=data, headers={"Content-Encoding": encoding})
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(reply.json(), expected[:3], rtol=1e-6, atol=1e-7)
    bad = served.post("/json", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert bad.status_code == 400
    assert "gzip" in bad.json()["error"]
    brotli = served.post("/json", content=body, headers={"Content-Encoding": "br"})
    assert brotli.status_code == 415
    nan_row = json.dumps(inputs[0]).replace(str(inputs[0][-1]), "NaN", 1)
    reply = served.post("/json", content=f'{{"model": "m", "values": {nan_row}}}')
    assert reply.status_code == 200, reply.text
    assert np.isfinite(reply.json()).all()


def test_a_compressed_body_is_held_to_the_limit_after_inflating(tmp_path, bundles):
    with make_client(tmp_path, max_request_bytes=4096) as c:
        assert c.post("/upload", content=tarball(bundles["a"])).status_code == 200
        bomb = gzip.compress(b'{"values": [' + b"0," * 100_000 + b"0]}")
        assert len(bomb) < 4096
        reply = c.post("/json", content=bomb, headers={"Content-Encoding": "gzip"})
        assert reply.status_code == 413


def test_large_replies_are_gzipped_for_clients_that_accept_it(served, bundles):
    inputs, _ = reference(bundles["a"])
    rows = inputs * (200 // len(inputs) + 1)
    reply = served.post(
        "/json", json={"model": "m", "values": rows}, headers={"Accept-Encoding": "gzip"}
    )
    assert reply.status_code == 200
    assert reply.headers["content-encoding"] == "gzip"
    plain = served.post(
        "/json", json={"model": "m", "values": rows}, headers={"Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in plain.headers
    assert reply.json() == plain.json()


def test_tfaas_name_key_chooses_the_model(served, bundles):
    inputs, expected = reference(bundles["a"])
    reply = served.post("/json", json={"name": "m", "values": inputs[:2]})
    assert reply.status_code == 200
    np.testing.assert_allclose(reply.json(), expected[:2], rtol=1e-6, atol=1e-7)
    assert served.post("/json", json={"name": "nope", "values": inputs[:2]}).status_code == 404
    both = served.post("/json", json={"name": "m", "model": "other", "values": inputs[:2]})
    assert both.status_code == 400
    assert "two models" in both.json()["error"]


def test_tf_serving_spellings(served, bundles):
    inputs, expected = reference(bundles["a"])
    body = {"signature_name": "", "instances": inputs[:2]}
    for path in ("/v1/models/m:predict", "/v1/models/m/labels/stable:predict"):
        reply = served.post(path, json=body)
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(reply.json()["predictions"], expected[:2], rtol=1e-6)
    get = served.get("/v1/models/m:predict")
    assert get.status_code == 405
    assert get.headers["allow"] == "POST"
    for path in (
        "/v1/models/m/versions/1/metadata",
        "/v1/models/m/labels/latest/metadata",
        "/v1/models/m/labels/stable",
    ):
        assert served.get(path).status_code == 200, path
    missing = served.get("/v1/models/m/labels/canary")
    assert missing.status_code == 404
    assert "stable" in missing.json()["error"]
    assert served.get("/v1/models/m/versions/2/metadata").status_code == 404


def test_the_numbers_still_match_after_the_extensions(served, bundles):
    inputs, expected = reference(bundles["a"])
    np.testing.assert_allclose(predict(served, inputs), expected, rtol=1e-6, atol=1e-7)


def test_prometheus_metrics_label_only_handlers_and_served_models(served, bundles):
    from prometheus_client.parser import text_string_to_metric_families

    inputs, _ = reference(bundles["a"])
    predict(served, inputs[:5])
    for path in ("/no/such/route/1", "/no/such/route/2", "/v2/models/not-a-model/ready"):
        served.get(path)
    reply = served.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    samples = [s for f in text_string_to_metric_families(reply.text) for s in f.samples]
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    assert values[("rootml_inference_rows_total", (("model", "m"),))] >= 5
    assert values[("rootml_models_stored", ())] == 1
    assert values[("rootml_uploads_total", (("outcome", "installed"),))] == 1
    ok = (("code", "200"), ("handler", "predict_json"), ("method", "POST"))
    assert values[("rootml_http_requests_total", ok)] >= 1
    labels = {v for s in samples for v in s.labels.values()}
    assert not {"/no/such/route/1", "not-a-model"} & labels  # nothing a client made up
    assert (
        values[
            (
                "rootml_http_requests_total",
                (("code", "404"), ("handler", "none"), ("method", "GET")),
            )
        ]
        == 2
    )
