"""KServe V2 over gRPC: ``inference.GRPCInferenceService`` on ``rootml serve --grpc-port``.

The messages are declared below, field by field, from the published protocol definition
(KServe's ``grpc_predict_v2.proto``, and the parts of Triton's ``grpc_service.proto`` and
``model_config.proto`` that its clients call: the model configuration, statistics and the
repository). They are built at start-up into a private descriptor pool, so there is no
generated code to keep in step with the protobuf runtime, and a process may also import a
client's own generated classes (tritonclient's) without a clash of names. Only the fields
rootml fills are declared for Triton's ``ModelConfig`` and ``ModelStatistics``: on the wire a
message is its field numbers, and a client reads fields it is not sent as empty.

The service answers what the HTTP routes answer, from the same store and the same checks
(:mod:`.protocols`): one input tensor ``[N, dim]`` as ``raw_input_contents`` (little-endian,
what tritonclient sends) or typed ``contents``; the output comes back as
``raw_output_contents`` FP32, as Triton sends it. A client's mistake is
``INVALID_ARGUMENT`` (HTTP 400), ``NOT_FOUND`` (404), ``UNAUTHENTICATED`` (401) or
``RESOURCE_EXHAUSTED`` (a message over ``--max-request-bytes``), never ``INTERNAL``. Loading
and unloading a model need the token (``authorization: Bearer <token>`` in the call's
metadata) when the server has one, as their HTTP routes do.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import cache
from typing import Any

import numpy as np

from .. import __version__
from ..exceptions import RequestError, RootmlError
from . import extensions, protocols
from .auth import require_token

log = logging.getLogger(__name__)

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"

#: every message: ``"[repeated] TYPE name = NUMBER; ..."``; ``map<V>`` is a map from string to
#: V; a message whose text starts with ``oneof NAME:`` has all its fields in that one-of
MESSAGES: dict[str, str] = {
    "ServerLiveRequest": "",
    "ServerLiveResponse": "bool live = 1",
    "ServerReadyRequest": "",
    "ServerReadyResponse": "bool ready = 1",
    "ModelReadyRequest": "string name = 1; string version = 2",
    "ModelReadyResponse": "bool ready = 1",
    "ServerMetadataRequest": "",
    "ServerMetadataResponse": "string name = 1; string version = 2; repeated string extensions = 3",
    "ModelMetadataRequest": "string name = 1; string version = 2",
    "ModelMetadataResponse": "string name = 1; repeated string versions = 2; string platform = 3;"
    " repeated ModelMetadataResponse.TensorMetadata inputs = 4;"
    " repeated ModelMetadataResponse.TensorMetadata outputs = 5",
    "ModelMetadataResponse.TensorMetadata": "string name = 1; string datatype = 2;"
    " repeated int64 shape = 3",
    "InferParameter": "oneof parameter_choice: bool bool_param = 1; int64 int64_param = 2;"
    " string string_param = 3; double double_param = 4; uint64 uint64_param = 5",
    "InferTensorContents": "repeated bool bool_contents = 1; repeated int32 int_contents = 2;"
    " repeated int64 int64_contents = 3; repeated uint32 uint_contents = 4;"
    " repeated uint64 uint64_contents = 5; repeated float fp32_contents = 6;"
    " repeated double fp64_contents = 7; repeated bytes bytes_contents = 8",
    "ModelInferRequest": "string model_name = 1; string model_version = 2; string id = 3;"
    " map<InferParameter> parameters = 4; repeated ModelInferRequest.InferInputTensor inputs = 5;"
    " repeated ModelInferRequest.InferRequestedOutputTensor outputs = 6;"
    " repeated bytes raw_input_contents = 7",
    "ModelInferRequest.InferInputTensor": "string name = 1; string datatype = 2;"
    " repeated int64 shape = 3; map<InferParameter> parameters = 4;"
    " InferTensorContents contents = 5",
    "ModelInferRequest.InferRequestedOutputTensor": "string name = 1;"
    " map<InferParameter> parameters = 2",
    "ModelInferResponse": "string model_name = 1; string model_version = 2; string id = 3;"
    " map<InferParameter> parameters = 4;"
    " repeated ModelInferResponse.InferOutputTensor outputs = 5;"
    " repeated bytes raw_output_contents = 6",
    "ModelInferResponse.InferOutputTensor": "string name = 1; string datatype = 2;"
    " repeated int64 shape = 3; map<InferParameter> parameters = 4;"
    " InferTensorContents contents = 5",
    "ModelStreamInferResponse": "string error_message = 1; ModelInferResponse infer_response = 2",
    # Triton's extensions (grpc_service.proto, model_config.proto): the fields rootml fills
    "ModelConfigRequest": "string name = 1; string version = 2",
    "ModelConfigResponse": "ModelConfig config = 1",
    "ModelConfig": "string name = 1; string platform = 2; string backend = 17;"
    " int32 max_batch_size = 4; repeated ModelInput input = 5; repeated ModelOutput output = 6;"
    " map<ModelParameter> parameters = 14",
    "ModelInput": "string name = 1; DataType data_type = 2; repeated int64 dims = 4",
    "ModelOutput": "string name = 1; DataType data_type = 2; repeated int64 dims = 3",
    "ModelParameter": "string string_value = 1",
    "ModelStatisticsRequest": "string name = 1; string version = 2",
    "ModelStatisticsResponse": "repeated ModelStatistics model_stats = 1",
    "ModelStatistics": "string name = 1; string version = 2; uint64 last_inference = 3;"
    " uint64 inference_count = 4; uint64 execution_count = 5;"
    " InferStatistics inference_stats = 6",
    "InferStatistics": "StatisticDuration success = 1; StatisticDuration fail = 2;"
    " StatisticDuration queue = 3; StatisticDuration compute_input = 4;"
    " StatisticDuration compute_infer = 5; StatisticDuration compute_output = 6",
    "StatisticDuration": "uint64 count = 1; uint64 ns = 2",
    "RepositoryIndexRequest": "string repository_name = 1; bool ready = 2",
    "RepositoryIndexResponse": "repeated RepositoryIndexResponse.ModelIndex models = 1",
    "RepositoryIndexResponse.ModelIndex": "string name = 1; string version = 2;"
    " string state = 3; string reason = 4",
    "ModelRepositoryParameter": "oneof parameter_choice: bool bool_param = 1;"
    " int64 int64_param = 2; string string_param = 3; bytes bytes_param = 4",
    "RepositoryModelLoadRequest": "string repository_name = 1; string model_name = 2;"
    " map<ModelRepositoryParameter> parameters = 3",
    "RepositoryModelLoadResponse": "",
    "RepositoryModelUnloadRequest": "string repository_name = 1; string model_name = 2;"
    " map<ModelRepositoryParameter> parameters = 3",
    "RepositoryModelUnloadResponse": "",
}

ENUMS = {
    "DataType": [
        "TYPE_INVALID",
        "TYPE_BOOL",
        "TYPE_UINT8",
        "TYPE_UINT16",
        "TYPE_UINT32",
        "TYPE_UINT64",
        "TYPE_INT8",
        "TYPE_INT16",
        "TYPE_INT32",
        "TYPE_INT64",
        "TYPE_FP16",
        "TYPE_FP32",
        "TYPE_FP64",
        "TYPE_STRING",
        "TYPE_BF16",
    ]
}

#: method -> (request, response, streaming both ways)
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse", False),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse", False),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse", False),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse", False),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse", False),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse", False),
    "ModelStreamInfer": ("ModelInferRequest", "ModelStreamInferResponse", True),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse", False),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse", False),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse", False),
    "RepositoryModelLoad": ("RepositoryModelLoadRequest", "RepositoryModelLoadResponse", False),
    "RepositoryModelUnload": (
        "RepositoryModelUnloadRequest",
        "RepositoryModelUnloadResponse",
        False,
    ),
}

#: the typed ``contents`` field that carries each V2 datatype
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


# ------------------------------------------------------------------ the messages


def _file_descriptor():
    from google.protobuf import descriptor_pb2

    field = descriptor_pb2.FieldDescriptorProto
    scalars = {
        name: getattr(field, f"TYPE_{name.upper()}")
        for name in ("bool", "string", "bytes", "int32", "int64", "uint32", "uint64", "double")
    }
    scalars["float"] = field.TYPE_FLOAT
    proto = descriptor_pb2.FileDescriptorProto(
        name="rootml/kserve_v2.proto", package=PACKAGE, syntax="proto3"
    )
    for name, values in ENUMS.items():
        enum = proto.enum_type.add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    made: dict[str, Any] = {}
    for name in sorted(MESSAGES, key=lambda n: n.count(".")):  # parents before nested ones
        parent, _, leaf = name.rpartition(".")
        message = (made[parent].nested_type if parent else proto.message_type).add(name=leaf)
        made[name] = message
        text = MESSAGES[name]
        if text.startswith("oneof "):
            oneof, _, text = text[len("oneof ") :].partition(":")
            message.oneof_decl.add(name=oneof.strip())
        for decl in filter(None, (part.strip() for part in text.split(";"))):
            spec, _, number = decl.partition("=")
            *kind, fname = spec.split()
            f = message.field.add(name=fname, number=int(number), label=field.LABEL_OPTIONAL)
            if message.oneof_decl:
                f.oneof_index = 0
            if kind[0] == "repeated":
                f.label = field.LABEL_REPEATED
                kind = kind[1:]
            type_name = kind[0]
            if type_name.startswith("map<"):
                entry = message.nested_type.add(name=f"{fname.title().replace('_', '')}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=field.TYPE_STRING,
                                label=field.LABEL_OPTIONAL)  # fmt: skip
                value = entry.field.add(name="value", number=2, label=field.LABEL_OPTIONAL)
                value.type, value.type_name = field.TYPE_MESSAGE, f".{PACKAGE}.{type_name[4:-1]}"
                f.label, f.type = field.LABEL_REPEATED, field.TYPE_MESSAGE
                f.type_name = f".{PACKAGE}.{name}.{entry.name}"
            elif type_name in scalars:
                f.type = scalars[type_name]
            elif type_name in ENUMS:
                f.type, f.type_name = field.TYPE_ENUM, f".{PACKAGE}.{type_name}"
            else:
                f.type, f.type_name = field.TYPE_MESSAGE, f".{PACKAGE}.{type_name}"
    service = proto.service.add(name=SERVICE.rpartition(".")[2])
    for method, (request, response, stream) in METHODS.items():
        service.method.add(
            name=method,
            input_type=f".{PACKAGE}.{request}",
            output_type=f".{PACKAGE}.{response}",
            client_streaming=stream,
            server_streaming=stream,
        )
    return proto


class Messages:
    """The message classes by name (``Messages().ModelInferRequest``), from a private pool."""

    def __init__(self) -> None:
        from google.protobuf import descriptor_pool, message_factory

        self.pool = descriptor_pool.DescriptorPool()
        self.file = self.pool.Add(_file_descriptor())
        for name in MESSAGES:
            descriptor = self.pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
            setattr(self, name.replace(".", "_"), message_factory.GetMessageClass(descriptor))


@cache
def messages() -> Messages:
    return Messages()


def _from_dict(doc: dict, cls: type) -> Any:
    """A message of ``cls`` from the dict the HTTP route answers (its extra keys ignored)."""
    from google.protobuf import json_format

    return json_format.ParseDict(doc, cls(), ignore_unknown_fields=True)


# ------------------------------------------------------------------ the service

#: HTTP status of a RequestError -> gRPC status code name
STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    503: "UNAVAILABLE",
}


class InferenceService:
    """The handlers, over the app's state (its store, token, statistics and readiness)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.m = messages()

    async def ServerLive(self, _req, _ctx):
        return self.m.ServerLiveResponse(live=True)

    async def ServerReady(self, _req, _ctx):
        return self.m.ServerReadyResponse(ready=bool(self.state.ready))

    async def ServerMetadata(self, _req, _ctx):
        return self.m.ServerMetadataResponse(
            name="rootml", version=__version__, extensions=list(EXTENSIONS)
        )

    async def ModelReady(self, req, _ctx):
        try:
            await self._model(req.name, req.version)
        except RequestError as err:
            if err.status != 404:
                raise
            return self.m.ModelReadyResponse(ready=False)
        return self.m.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, req, _ctx):
        model = await self._model(req.name, req.version)
        return _from_dict(model.metadata(), self.m.ModelMetadataResponse)

    async def ModelConfig(self, req, _ctx):
        model = await self._model(req.name, req.version)
        return self.m.ModelConfigResponse(
            config=_from_dict(extensions.config_of(model), self.m.ModelConfig)
        )

    async def ModelStatistics(self, req, _ctx):
        names = None
        if req.name:
            names = [(await self._model(req.name, req.version)).name]
        docs = extensions.stats_of(self.state.stats, names)
        return _from_dict({"model_stats": docs}, self.m.ModelStatisticsResponse)

    async def RepositoryIndex(self, req, _ctx):
        listing = extensions.index_of(self.state.store, req.ready)
        return _from_dict({"models": listing}, self.m.RepositoryIndexResponse)

    async def RepositoryModelLoad(self, req, ctx):
        self._require_token(ctx)
        await self.state.store.get(req.model_name)
        return self.m.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, req, ctx):
        self._require_token(ctx)
        await extensions.unload_model(self.state.store, req.model_name)
        return self.m.RepositoryModelUnloadResponse()

    async def ModelInfer(self, req, _ctx):
        model = await self._model(req.model_name, req.model_version)
        x = self._rows(req, model)
        out = await extensions.run_counted(self.state.stats, model, x)
        return self._reply(req, model, out)

    async def ModelStreamInfer(self, requests, ctx) -> AsyncIterator:
        """One response per request, in order; a request's mistake is its response's
        ``error_message`` (as Triton streams them) and the stream goes on."""
        async for req in requests:
            if isinstance(req, _Undecodable):
                yield self.m.ModelStreamInferResponse(error_message=req.reason)
                continue
            try:
                reply = await self.ModelInfer(req, ctx)
            except RootmlError as err:
                yield self.m.ModelStreamInferResponse(error_message=str(err))
            else:
                yield self.m.ModelStreamInferResponse(infer_response=reply)

    # -------------------------------------------------------------- helpers

    async def _model(self, name: str, version: str):
        if not name:
            raise RequestError(400, "the request names no model")
        protocols.check_version(version or "1")
        return await self.state.store.get(name)

    def _require_token(self, ctx) -> None:
        given = dict(ctx.invocation_metadata() or ()).get("authorization")
        require_token(self.state.token, given)

    def _rows(self, req, model) -> np.ndarray:
        """The one input tensor, through the HTTP route's checks (:func:`.protocols.v2_rows`)."""
        if len(req.inputs) != 1:
            raise RequestError(
                400,
                f"'inputs' must hold one tensor, {model.input_name!r} [N, {model.dim}]; "
                f"got {len(req.inputs)}",
            )
        tensor = req.inputs[0]
        dtype = protocols.V2_TYPES.get(tensor.datatype)
        if req.raw_input_contents:
            if len(req.raw_input_contents) != 1:
                raise RequestError(400, "raw_input_contents must hold one entry per input (one)")
            data = req.raw_input_contents[0]
        elif dtype is not None and tensor.datatype not in CONTENTS:
            raise RequestError(
                400, f"{tensor.datatype} has no typed contents field: send raw_input_contents"
            )
        elif dtype is not None:
            values = getattr(tensor.contents, CONTENTS[tensor.datatype])
            data = np.asarray(values, dtype=dtype).tobytes()
        else:
            data = b""  # not numeric: protocols.v2_rows names the datatype
        shape = list(tensor.shape)
        if dtype is not None and len(shape) == 2 and min(shape) >= 0:
            need = shape[0] * shape[1] * np.dtype(dtype).itemsize
            if len(data) != need:
                where = "raw_input_contents[0]" if req.raw_input_contents else "the contents"
                raise RequestError(
                    400,
                    f"{where} holds {len(data)} bytes but shape {shape} {tensor.datatype} "
                    f"needs {need}",
                )
        params = {"binary_data_size": len(data)}
        doc = {"name": tensor.name, "datatype": tensor.datatype, "shape": shape,
               "parameters": params}  # fmt: skip
        return protocols.v2_rows({"inputs": [doc]}, model, data)

    def _reply(self, req, model, out: np.ndarray):
        for requested in req.outputs:
            if requested.name != model.output_name:
                raise RequestError(
                    400,
                    f"output {requested.name[:64]!r} is unknown: model {model.name!r} gives "
                    f"{model.output_name!r}",
                )
        out = np.ascontiguousarray(out, dtype="<f4")
        reply = self.m.ModelInferResponse(model_name=model.name, model_version="1", id=req.id)
        reply.outputs.add(name=model.output_name, datatype="FP32", shape=list(out.shape))
        reply.raw_output_contents.append(out.tobytes())
        return reply


EXTENSIONS = ("model_configuration", "model_repository", "statistics", "streaming")


def _handler(method: Callable[..., Awaitable], name: str) -> Callable:
    """``method`` with rootml's errors turned into gRPC status codes."""
    import grpc

    async def call(req, ctx):
        if isinstance(req, _Undecodable):
            await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, req.reason)
        try:
            return await method(req, ctx)
        except RequestError as err:
            await ctx.abort(getattr(grpc.StatusCode, STATUS.get(err.status, "INVALID_ARGUMENT")),
                            str(err))  # fmt: skip
        except RootmlError as err:
            await ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except Exception:
            log.exception("error in gRPC %s", name)
            await ctx.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")

    return call


class _Undecodable:
    """What the deserializer hands the handler for bytes that are not the request message
    (gRPC would answer INTERNAL for a deserializer that raises: it is the client's mistake)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _decoder(cls: type, name: str) -> Callable[[bytes], Any]:
    def decode(data: bytes):
        try:
            return cls.FromString(data)
        except Exception as err:  # noqa: BLE001  # protobuf's DecodeError, RuntimeWarning, ...
            return _Undecodable(f"the request is not a valid {name} message: {err}")

    return decode


def generic_handler(service: InferenceService):
    import grpc

    handlers = {}
    for name, (request, response, stream) in METHODS.items():
        decode = _decoder(getattr(service.m, request), request)
        encode = getattr(service.m, response).SerializeToString
        method = getattr(service, name)
        if stream:
            handlers[name] = grpc.stream_stream_rpc_method_handler(
                method, request_deserializer=decode, response_serializer=encode
            )
        else:
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                _handler(method, name), request_deserializer=decode, response_serializer=encode
            )
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


async def start(state: Any, host: str, port: int, max_message_bytes: int, shared: bool):
    """A started ``grpc.aio`` server on ``host:port`` in this event loop; ``.stop(grace)`` it.
    With ``shared`` (several worker processes) the workers share the port (SO_REUSEPORT);
    without, a port another server holds is an error, not a silent split of the traffic."""
    import grpc

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 1 if shared else 0),
        ]
    )
    server.add_generic_rpc_handlers((generic_handler(InferenceService(state)),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise RootmlError(
            f"cannot listen for gRPC on {address}: the port is in use or not allowed; "
            "choose another --grpc-port"
        )
    await server.start()
    log.info("rootml serve: KServe V2 gRPC on %s", address)
    return server
