"""The OpenAPI 3.1 description of every route, served at ``/openapi.json``.

Written for the tools clients use as much as for the standard: nullable numbers are ``anyOf``
(schemathesis and older generators stumble on type lists), each prediction body says which of
its fields are required, the V2 binary tensor form is its own content type, and the bearer
security is declared only when the server has a token.
"""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"}
_NUMBER_OR_NULL = {"anyOf": [{"type": "number"}, {"type": "null"}]}
_ROW = {"type": "array", "minItems": 1, "items": _NUMBER_OR_NULL}
_ROWS = {"oneOf": [_ROW, {"type": "array", "minItems": 1, "items": _ROW}]}
_RECORD = {
    "type": "object",
    "minProperties": 1,
    "description": "a record as the model's record files held it (nested objects; fields "
    "the model does not read are ignored)",
}
_EVENT = {
    "type": "object",
    "minProperties": 1,
    "description": "branch name -> number (flat branch) or list of numbers (one per object)",
    "additionalProperties": {
        "oneOf": [_NUMBER_OR_NULL, {"type": "array", "items": _NUMBER_OR_NULL}]
    },
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: dict | None = None, body: dict | None = None, **extra: Any) -> dict:
    responses: dict[str, Any] = {
        "200": {"description": "OK", **(ok or _json({"type": "object"}))},
        "400": {"description": "the client's mistake", **_json(_ref("Error"))},
        "404": {"description": "no such model or route", **_json(_ref("Error"))},
        "413": {"description": "body over the limit", **_json(_ref("Error"))},
        "415": {
            "description": "a content type or encoding this route cannot read",
            **_json(_ref("Error")),
        },
    }
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if body is not None:
        op["requestBody"] = {"required": True, **body}
    return op


def _secured(op: dict) -> dict:
    """An operation that changes the store: marked for the token (removed again by
    :func:`openapi_document` when the server has none)."""
    op["security"] = [{"bearer": []}]
    op["responses"]["401"] = {
        "description": "missing or wrong bearer token",
        **_json(_ref("Error")),
    }
    return op


def _unsecured(paths: dict) -> None:
    for ops in paths.values():
        for op in ops.values():
            op.pop("security", None)
            op["responses"].pop("401", None)


def _path_name(name: str = "name") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": _NAME}


_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["1"]},
}
_LABEL = {
    "name": "label",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["stable", "latest"]},
}


def openapi_document(version: str, *, token: bool = True) -> dict:
    """The document; ``version`` is rootml's, ``token`` whether the server requires one for
    changes."""
    predict = _op(
        "TFaaS prediction: one row -> a flat list of outputs, a list of rows -> a list of lists",
        _json({"oneOf": [_ROW, {"type": "array", "items": _ROW}]}),
        _json(_ref("TFaaSRequest")),
    )
    binary = {
        "schema": {"type": "string", "format": "binary"},
        "description": "the binary tensor data extension: the JSON request header, then the "
        "tensors' bytes; the header's length in Inference-Header-Content-Length",
    }
    infer = _op(
        "KServe V2 inference (binary tensor data extension supported)",
        {
            "content": {
                "application/json": {"schema": _ref("V2Response")},
                "application/octet-stream": binary,
            }
        },
        {
            "content": {
                "application/json": {"schema": _ref("V2Request")},
                "application/octet-stream": binary,
            }
        },
        parameters=[_path_name()],
    )
    infer_v = {**infer, "parameters": [_path_name(), _VERSION]}
    upload = _secured(
        _op(
            "Upload a bundle tarball (one top-level folder = the model name)",
            _json(_ref("UploadResult")),
            {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "model": {"type": "string", "format": "binary"},
                                "bundle": {"type": "string", "format": "binary"},
                                "file": {"type": "string", "format": "binary"},
                                "tarball": {"type": "string", "format": "binary"},
                                "name": _NAME,
                                "params": {"type": "string", "format": "binary"},
                                "labels": {"type": "string", "format": "binary"},
                            },
                        }
                    },
                }
            },
            parameters=[{"name": "name", "in": "query", "required": False, "schema": _NAME}],
        )
    )
    delete_form = _secured(
        _op(
            "Delete a model named by the form field 'model' (?model=NAME works too)",
            body={
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["model"],
                            "additionalProperties": False,
                            "properties": {"model": _NAME},
                        }
                    }
                }
            },
        )
    )
    tfs_predict = _op(
        "TF Serving REST predict ('instances' or 'inputs')",
        _json({"type": "object"}),
        _json(_ref("TFServingRequest")),
        parameters=[_path_name()],
    )
    metadata = _op("V2 model metadata", _json(_ref("V2Metadata")), parameters=[_path_name()])
    model_ready = _op("V2 model readiness", parameters=[_path_name()])
    tfs_status = _op("TF Serving model status", parameters=[_path_name()])
    config = _op("Triton model configuration", parameters=[_path_name()])
    stats = _op("Triton statistics of a model (this worker's)", parameters=[_path_name()])
    paths = {
        "/json": {"post": predict},
        "/predict/json": {"post": predict},
        "/upload": {"post": upload},
        "/delete": {"delete": delete_form},
        "/delete/{name}": {"delete": _secured(_op("Delete a model", parameters=[_path_name()]))},
        "/models": {
            "get": _op("All models' params.json", _json({"type": "array", "items": _ref("Params")}))
        },
        "/params": {
            "post": _secured(
                _op(
                    "Make a model the default for requests without 'model'",
                    body=_json(
                        {"type": "object", "required": ["name"], "properties": {"name": _NAME}}
                    ),
                )
            )
        },
        "/params/{name}": {
            "get": _op("A model's params.json", _json(_ref("Params")), parameters=[_path_name()])
        },
        "/status": {"get": _op("Server status (TFaaS fields and more)")},
        "/v2": {"get": _op("V2 server metadata")},
        "/v2/health/live": {"get": _op("V2 liveness")},
        "/v2/health/ready": {"get": _op("V2 readiness")},
        "/v2/models/{name}": {"get": metadata},
        "/v2/models/{name}/versions/{version}": {
            "get": {**metadata, "parameters": [_path_name(), _VERSION]}
        },
        "/v2/models/{name}/ready": {"get": model_ready},
        "/v2/models/{name}/versions/{version}/ready": {
            "get": {**model_ready, "parameters": [_path_name(), _VERSION]}
        },
        "/v2/models/{name}/infer": {"post": infer},
        "/v2/models/{name}/versions/{version}/infer": {"post": infer_v},
        "/v1/models/{name}": {"get": tfs_status},
        "/v1/models/{name}/versions/{version}": {
            "get": {**tfs_status, "parameters": [_path_name(), _VERSION]}
        },
        "/v1/models/{name}/metadata": {
            "get": _op("TF Serving model metadata", parameters=[_path_name()])
        },
        "/v1/models/{name}:predict": {"post": tfs_predict},
        "/v1/models/{name}/versions/{version}:predict": {
            "post": {**tfs_predict, "parameters": [_path_name(), _VERSION]}
        },
        "/v1/models/{name}/versions/{version}/metadata": {
            "get": _op("TF Serving model metadata", parameters=[_path_name(), _VERSION])
        },
        "/v1/models/{name}/labels/{label}": {
            "get": {**tfs_status, "parameters": [_path_name(), _LABEL]}
        },
        "/v1/models/{name}/labels/{label}/metadata": {
            "get": _op("TF Serving model metadata", parameters=[_path_name(), _LABEL])
        },
        "/v1/models/{name}/labels/{label}:predict": {
            "post": {**tfs_predict, "parameters": [_path_name(), _LABEL]}
        },
        "/v2/models/{name}/config": {"get": config},
        "/v2/models/{name}/versions/{version}/config": {
            "get": {**config, "parameters": [_path_name(), _VERSION]}
        },
        "/v2/models/{name}/stats": {"get": stats},
        "/v2/models/{name}/versions/{version}/stats": {
            "get": {**stats, "parameters": [_path_name(), _VERSION]}
        },
        "/v2/models/stats": {"get": _op("Triton statistics of every model used so far")},
        "/v2/repository/index": {
            "post": {
                **_op(
                    "Triton repository index: every stored model and its state",
                    _json({"type": "array", "items": {"type": "object"}}),
                    _json(
                        {
                            "type": "object",
                            "properties": {
                                "ready": {"type": "boolean"},
                            },
                        }
                    ),
                ),
            }
        },
        "/v2/repository/models/{name}/load": {
            "post": _secured(_op("Load a stored model into memory", parameters=[_path_name()]))
        },
        "/v2/repository/models/{name}/unload": {
            "post": _secured(
                _op("Drop a model from this worker's memory", parameters=[_path_name()])
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics (text format): requests, latencies, models, uploads",
                {"content": {"text/plain": {"schema": {"type": "string"}}}},
            )
        },
        "/openapi.json": {"get": _op("This document")},
        "/": {"get": _op("Server index")},
    }
    paths["/v2/repository/index"]["post"]["requestBody"]["required"] = False
    if not token:
        _unsecured(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rootml serve",
            "version": version,
            "description": (
                "A TFaaS-compatible inference server for rootml bundles, with KServe V2 "
                "(Open Inference Protocol) and TF Serving REST routes. Clients send raw "
                "physics values; null marks a missing object."
            ),
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }


def _schemas() -> dict:
    tensor_in = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {
                "type": "string",
                "enum": [
                    "FP32",
                    "FP64",
                    "FP16",
                    "INT8",
                    "INT16",
                    "INT32",
                    "INT64",
                    "UINT8",
                    "UINT16",
                    "UINT32",
                    "UINT64",
                    "BOOL",
                ],
            },
            "parameters": {"type": "object"},
            "data": {"type": "array"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "TFaaSRequest": {
            "type": "object",
            "anyOf": [
                {"required": ["values"]},
                {"required": ["event"]},
                {"required": ["events"]},
                {"required": ["record"]},
                {"required": ["records"]},
            ],
            "properties": {
                "name": {**_NAME, "description": "the model, as 'model' (some TFaaS docs)"},
                "model": _NAME,
                "keys": {"type": "array", "items": {"type": "string"}},
                "values": _ROWS,
                "event": _EVENT,
                "events": {"type": "array", "minItems": 1, "items": _EVENT},
                "record": _RECORD,
                "records": {"type": "array", "minItems": 1, "items": _RECORD},
            },
        },
        "Params": {
            "type": "object",
            "properties": {
                "name": _NAME,
                "model": {"type": "string"},
                "labels": {"type": "string"},
                "inputNode": {"type": "string"},
                "outputNode": {"type": "string"},
                "input_node": {"type": "string"},
                "output_node": {"type": "string"},
                "description": {"type": "string"},
                "timestamp": {"type": "string"},
                "features": {"type": "array", "items": {"type": "string"}},
                "classes": {"type": "array", "items": {"type": "string"}},
            },
        },
        "UploadResult": {
            "type": "object",
            "properties": {
                "name": _NAME,
                "version": {"type": "string"},
                "backend": {"type": "string"},
                "features": {"type": "integer"},
                "files": {"type": "integer"},
                "unpacked_bytes": {"type": "integer"},
                "sha256": {"type": "string"},
            },
        },
        "V2Request": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": tensor_in},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
        },
        "V2Response": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": tensor_in},
            },
        },
        "V2Metadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": {"type": "object"}},
                "outputs": {"type": "array", "items": {"type": "object"}},
            },
        },
        "TFServingRequest": {
            "type": "object",
            "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
            "properties": {
                "signature_name": {"type": "string", "enum": ["", "serving_default"]},
                "instances": {
                    "description": "rows (lists of numbers) or named events (branch -> value)",
                    "oneOf": [
                        {"type": "array", "minItems": 1, "items": _ROW},
                        {"type": "array", "minItems": 1, "items": _EVENT},
                    ],
                },
                "inputs": {
                    "description": "the rows, or {input name: rows}",
                    "oneOf": [
                        {"type": "array", "minItems": 1, "items": _ROW},
                        {
                            "type": "object",
                            "minProperties": 1,
                            "maxProperties": 1,
                            "additionalProperties": {"type": "array", "minItems": 1, "items": _ROW},
                        },
                    ],
                },
            },
        },
    }
