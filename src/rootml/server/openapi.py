"""The OpenAPI 3.1 description of every route, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_]{1,64}$"}
_ROW = {"type": "array", "items": {"type": ["number", "null"]}}
_ROWS = {"oneOf": [_ROW, {"type": "array", "items": _ROW}]}
_EVENT = {
    "type": "object",
    "description": "branch name -> number (flat branch) or list of numbers (one per object)",
    "additionalProperties": {
        "oneOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]
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
    }
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if body is not None:
        op["requestBody"] = {"required": True, **body}
    return op


def _secured(op: dict) -> dict:
    op["security"] = [{"bearer": []}]
    op["responses"]["401"] = {
        "description": "missing or wrong bearer token",
        **_json(_ref("Error")),
    }
    return op


def _path_name(name: str = "name") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": _NAME}


_VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["1"]},
}


def openapi_document(version: str) -> dict:
    """The document; ``version`` is rootml's."""
    predict = _op(
        "TFaaS prediction: one row -> a flat list of outputs, a list of rows -> a list of lists",
        _json({"oneOf": [_ROW, {"type": "array", "items": _ROW}]}),
        _json(_ref("TFaaSRequest")),
    )
    infer = _op(
        "KServe V2 inference (binary tensor data extension supported)",
        _json(_ref("V2Response")),
        _json(_ref("V2Request")),
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
                            "properties": {
                                "model": {"type": "string", "format": "binary"},
                                "bundle": {"type": "string", "format": "binary"},
                                "name": _NAME,
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
            "Delete a model named by the form field 'model' (or ?model=)",
            body={
                "content": {
                    "multipart/form-data": {
                        "schema": {"type": "object", "properties": {"model": _NAME}}
                    }
                }
            },
            parameters=[{"name": "model", "in": "query", "required": False, "schema": _NAME}],
        )
    )
    delete_form["requestBody"]["required"] = False
    tfs_predict = _op(
        "TF Serving REST predict ('instances' or 'inputs')",
        _json({"type": "object"}),
        _json(_ref("TFServingRequest")),
        parameters=[_path_name()],
    )
    metadata = _op("V2 model metadata", _json(_ref("V2Metadata")), parameters=[_path_name()])
    model_ready = _op("V2 model readiness", parameters=[_path_name()])
    tfs_status = _op("TF Serving model status", parameters=[_path_name()])
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
        "/openapi.json": {"get": _op("This document")},
        "/": {"get": _op("Server index")},
    }
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
            "properties": {
                "model": _NAME,
                "keys": {"type": "array", "items": {"type": "string"}},
                "values": _ROWS,
                "event": _EVENT,
                "events": {"type": "array", "items": _EVENT},
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
            "properties": {
                "signature_name": {"type": "string"},
                "instances": {"type": "array"},
                "inputs": {},
            },
        },
    }
