"""KServe V2 over gRPC (``rootml serve --grpc-port``) with NVIDIA's ``tritonclient.grpc``
over a real socket on 127.0.0.1: the same answers as the HTTP routes, status codes for a
client's mistakes, the token on the repository calls, and the messages' field numbers checked
against the client's own generated descriptors."""

from __future__ import annotations

import importlib.util
import json
import urllib.request

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("grpc")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from rootml.server import EmbeddedServer, ServerConfig
from rootml.server.kserve_grpc import MESSAGES, SERVICE, messages

from .helpers import TOKEN, make_client, reference, tarball


def _store_with_model(tmp_path_factory, bundles, name: str, **config) -> object:
    store = tmp_path_factory.mktemp(name)
    with make_client(store, **config) as c:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert c.post("/upload", content=tarball(bundles["a"]), headers=auth).status_code == 200
    return store / "store"


@pytest.fixture(scope="module")
def grpc_server(tmp_path_factory, bundles):
    """A real server with bundle A as model 'm', HTTP and gRPC, and tritonclient for gRPC."""
    triton = pytest.importorskip("tritonclient.grpc")
    store = _store_with_model(tmp_path_factory, bundles, "grpc")
    config = ServerConfig(models=store, port=0, grpc_port=0, max_request_bytes=1 << 20)
    with EmbeddedServer(config) as server:
        yield triton, triton.InferenceServerClient(server.grpc_target), server


def _http_json(server, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def _infer(triton, client, rows: np.ndarray, model: str = "m", **options) -> np.ndarray:
    meta = client.get_model_metadata(model, as_json=True)
    tensor = triton.InferInput(meta["inputs"][0]["name"], list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    out = triton.InferRequestedOutput(meta["outputs"][0]["name"])
    result = client.infer(model, [tensor], outputs=[out], **options)
    return result.as_numpy(meta["outputs"][0]["name"])


def test_the_messages_have_the_field_numbers_of_tritonclients_descriptors():
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    theirs = service_pb2.DESCRIPTOR.pool
    ours = messages()
    for name in MESSAGES:
        mine = ours.pool.FindMessageTypeByName(f"inference.{name}")
        other = theirs.FindMessageTypeByName(f"inference.{name}")
        for field in mine.fields:
            match = other.fields_by_number.get(field.number)
            assert match is not None, (name, field.name)
            assert (match.name, match.type, match.is_repeated) == (
                field.name, field.type, field.is_repeated
            ), (name, field.name)  # fmt: skip
    service = theirs.FindServiceByName(SERVICE)
    for method in ours.file.services_by_name["GRPCInferenceService"].methods:
        other = service.methods_by_name[method.name]
        assert other.input_type.full_name == method.input_type.full_name
        assert other.output_type.full_name == method.output_type.full_name


def test_tritonclient_grpc_answers_what_http_answers(grpc_server):
    _, client, server = grpc_server
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("m")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "rootml"
    http_meta = _http_json(server, "/v2/models/m")
    grpc_meta = client.get_model_metadata("m", as_json=True)
    assert grpc_meta["name"] == http_meta["name"]
    assert grpc_meta["platform"] == http_meta["platform"]
    for key in ("inputs", "outputs"):
        assert [(t["name"], t["datatype"], [int(s) for s in t["shape"]]) for t in grpc_meta[key]] == [
            (t["name"], t["datatype"], t["shape"]) for t in http_meta[key]
        ]  # fmt: skip
    http_config = _http_json(server, "/v2/models/m/config")
    grpc_config = client.get_model_config("m", as_json=True)["config"]
    assert grpc_config["name"] == "m"
    assert grpc_config["input"][0]["name"] == http_config["input"][0]["name"]
    assert grpc_config["input"][0]["data_type"] == "TYPE_FP32"
    assert [int(d) for d in grpc_config["input"][0]["dims"]] == http_config["input"][0]["dims"]
    assert grpc_config["parameters"] == http_config["parameters"]


def test_tritonclient_grpc_infer_matches_onnx_and_http(grpc_server, bundles):
    triton, client, server = grpc_server
    inputs, expected = reference(bundles["a"])
    rows = np.asarray(inputs, np.float32).copy()
    rows[0, -1] = np.nan  # "no such object": the padding, as over HTTP
    got = _infer(triton, client, rows)
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-6, atol=1e-7)
    body = {"inputs": [{"name": client.get_model_metadata("m", as_json=True)["inputs"][0]["name"],
                        "datatype": "FP32", "shape": list(rows.shape),
                        "data": [None if np.isnan(v) else float(v) for v in rows.ravel()]}]}  # fmt: skip
    http = _http_json(server, "/v2/models/m/infer", body)["outputs"][0]
    np.testing.assert_array_equal(got.ravel(), np.asarray(http["data"], np.float32))
    assert list(got.shape) == http["shape"]
    versioned = _infer(triton, client, rows[:3], model_version="1")
    np.testing.assert_array_equal(versioned, got[:3])


def test_typed_contents_and_the_stream(grpc_server, bundles):
    """A client that sends ``contents`` (FP64 here) instead of raw bytes, through a plain
    grpc channel; and tritonclient's bidirectional stream, a mistake answered in-stream."""
    import grpc

    triton, client, server = grpc_server
    inputs, expected = reference(bundles["a"])
    m = messages()
    request = m.ModelInferRequest(model_name="m", id="req-7")
    name = client.get_model_metadata("m", as_json=True)["inputs"][0]["name"]
    tensor = request.inputs.add(name=name, datatype="FP64", shape=[len(inputs), len(inputs[0])])
    tensor.contents.fp64_contents.extend(np.asarray(inputs, np.float64).ravel())
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=m.ModelInferRequest.SerializeToString,
            response_deserializer=m.ModelInferResponse.FromString,
        )
        reply = call(request, timeout=10)
    assert reply.id == "req-7"
    assert reply.outputs[0].datatype == "FP32"
    got = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(list(reply.outputs[0].shape))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)

    results: list = []
    client.start_stream(callback=lambda result, error: results.append((result, error)))
    rows = np.asarray(inputs[:4], np.float32)
    good = triton.InferInput(name, list(rows.shape), "FP32")
    good.set_data_from_numpy(rows)
    bad = triton.InferInput(name, [4, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((4, 3), np.float32))
    for tensor in (good, bad, good):
        client.async_stream_infer("m", [tensor])
    client.stop_stream()
    assert [error is None for _, error in results] == [True, False, True]
    assert "shape must be [N, " in str(results[1][1])
    output = client.get_model_metadata("m", as_json=True)["outputs"][0]["name"]
    np.testing.assert_allclose(results[2][0].as_numpy(output), expected[:4], rtol=1e-6, atol=1e-7)


def test_bytes_that_are_not_the_message_are_invalid_argument(grpc_server):
    import grpc

    _, _, server = grpc_server
    with grpc.insecure_channel(server.grpc_target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/ModelInfer")  # raw bytes in and out
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff\xff garbage", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest" in err.value.details()


def _status(err) -> str:
    return str(err.status())


def test_a_clients_mistake_is_a_status_code_with_the_reason(grpc_server, bundles):
    from tritonclient.utils import InferenceServerException

    triton, client, _ = grpc_server
    inputs, _ = reference(bundles["a"])
    rows = np.asarray(inputs, np.float32)
    name = client.get_model_metadata("m", as_json=True)["inputs"][0]["name"]
    cases = [
        ("nope", name, rows, "FP32", {}, "NOT_FOUND", "nope"),
        ("m", name, rows[:, :3], "FP32", {}, "INVALID_ARGUMENT", "shape must be"),
        ("m", "not_the_input", rows, "FP32", {}, "INVALID_ARGUMENT", "is unknown"),
        ("m", name, rows.astype(np.float64), "FP64", {"model_version": "2"}, "NOT_FOUND", "'1'"),
        ("m", name, np.zeros((5000, rows.shape[1]), np.float32), "FP32", {},
         "RESOURCE_EXHAUSTED", ""),
    ]  # fmt: skip
    for model, tensor_name, x, datatype, options, code, words in cases:
        tensor = triton.InferInput(tensor_name, list(x.shape), datatype)
        tensor.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as err:
            client.infer(model, [tensor], **options)
        assert _status(err.value) == f"StatusCode.{code}", (model, err.value)
        assert words in str(err.value)
    strings = triton.InferInput(name, [1, 1], "BYTES")
    strings.set_data_from_numpy(np.array([[b"x"]], dtype=object))
    with pytest.raises(InferenceServerException) as err:
        client.infer("m", [strings])
    assert _status(err.value) == "StatusCode.INVALID_ARGUMENT"
    assert "not numeric" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert _status(err.value) == "StatusCode.NOT_FOUND"


def test_statistics_index_and_the_token_on_load_and_unload(tmp_path_factory, bundles):
    triton = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    folder = tmp_path_factory.mktemp("grpc-token")
    token_file = folder / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    store = _store_with_model(tmp_path_factory, bundles, "grpc-store", token_file=token_file)
    config = ServerConfig(models=store, port=0, grpc_port=0, token_file=token_file)
    with EmbeddedServer(config) as server:
        client = triton.InferenceServerClient(server.grpc_target)
        inputs, _ = reference(bundles["a"])
        _infer(triton, client, np.asarray(inputs[:8], np.float32))
        stats = client.get_inference_statistics("m", as_json=True)["model_stats"][0]
        assert stats["name"] == "m"
        assert int(stats["inference_count"]) == 8
        assert int(stats["inference_stats"]["success"]["count"]) == 1
        index = client.get_model_repository_index(as_json=True)["models"]
        assert {"name": "m", "version": "1", "state": "READY"} in index
        for call in (client.unload_model, client.load_model):
            with pytest.raises(InferenceServerException) as err:
                call("m")
            assert _status(err.value) == "StatusCode.UNAUTHENTICATED"
            with pytest.raises(InferenceServerException) as err:
                call("m", headers={"authorization": "Bearer not-the-token-at-all"})
            assert _status(err.value) == "StatusCode.UNAUTHENTICATED"
        auth = {"authorization": f"Bearer {TOKEN}"}
        client.unload_model("m", headers=auth)
        index = client.get_model_repository_index(as_json=True)["models"]
        assert index == [{"name": "m", "version": "1", "state": "UNAVAILABLE"}]
        with pytest.raises(InferenceServerException) as err:
            client.load_model("nope", headers=auth)
        assert _status(err.value) == "StatusCode.NOT_FOUND"
        client.load_model("m", headers=auth)
        assert client.is_model_ready("m")


def test_a_grpc_port_in_use_stops_the_server_with_a_message(tmp_path):
    import socket

    from rootml.exceptions import RootmlError

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with (
            pytest.raises(RootmlError, match=f"cannot listen for gRPC on 127.0.0.1:{taken}"),
            make_client(tmp_path, grpc_port=taken),
        ):
            pass
