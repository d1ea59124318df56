"""The request shapes of :mod:`rootml.server.protocols` on a served bundle: TFaaS rows with
``keys`` and named ``events``, KServe V2 (JSON and binary tensors), the TF Serving alias, and
client mistakes answered 4xx with a JSON error."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from rootml.transform import events_to_raw

from .helpers import features, predict, reference


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
