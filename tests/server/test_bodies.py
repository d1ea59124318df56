"""Request bodies (:mod:`rootml.server.bodies`): byte limits answered 413, and fuzzed JSON
and raw bodies and model names in paths, which are client errors and never a 5xx."""

from __future__ import annotations

import importlib.util
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from starlette.testclient import TestClient

from rootml.server import ServerConfig
from rootml.server.app import create_app

from .helpers import make_client, store_snapshot, tarball


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
