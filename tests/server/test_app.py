"""The routes of :mod:`rootml.server.app` that are not a serving protocol: ``/models``,
``/params``, ``/status``, ``/openapi.json``, and JSON answers for unknown routes and paths."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from .helpers import features, make_client, reference, tarball


def test_models_is_an_empty_list_then_tfaas_params(client, bundles):
    assert client.get("/models").json() == []
    assert client.post("/upload", content=tarball(bundles["a"])).status_code == 200
    [params] = client.get("/models").json()
    assert params["name"] == "m"
    assert params["inputNode"] == params["input_node"] == "serving_default_inputs_input"
    assert params["outputNode"] == params["output_node"] == "StatefulPartitionedCall"
    assert params["features"] == features(bundles["a"])
    assert params["timestamp"]


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


MUTATIONS = (
    "/upload", "/delete", "/delete/{name}", "/params", "/v2/repository/models/{name}/load",
    "/v2/repository/models/{name}/unload",
)  # fmt: skip


def test_openapi_describes_every_route_and_security_only_with_a_token(client, tmp_path, token_file):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    routes = {r.path for r in client.app.routes}
    assert routes <= set(doc["paths"])
    for path in MUTATIONS:  # this server has no token: nothing to declare
        op = next(iter(doc["paths"][path].values()))
        assert "security" not in op, path
        assert "401" not in op["responses"], path
    with make_client(tmp_path / "t", token_file=token_file) as secured:
        doc = secured.get("/openapi.json").json()
    for path in MUTATIONS:
        op = next(iter(doc["paths"][path].values()))
        assert op["security"] == [{"bearer": []}], path
        assert "401" in op["responses"]
    assert not list(_type_lists(doc)), "type lists crash schemathesis 4.32: use anyOf"


def _type_lists(node):
    if isinstance(node, dict):
        if isinstance(node.get("type"), list):
            yield node
        for value in node.values():
            yield from _type_lists(value)
    elif isinstance(node, list):
        for value in node:
            yield from _type_lists(value)


def test_unknown_routes_and_methods_answer_json(served):
    assert served.get("/nope").status_code == 404
    assert "error" in served.get("/nope").json()
    reply = served.get("/json")
    assert reply.status_code == 405
    assert "error" in reply.json()


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
