"""The Starlette application: TFaaS routes, KServe V2, the TF Serving alias, named events.

Models are loaded in the lifespan and kept on ``app.state`` (the store, the token, the
limits); nothing lives at module level. Handlers read bodies through
:func:`~.bodies.read_body` (inflating gzip/deflate bodies), which counts bytes as they arrive and answers 413 past the limit
without reading the rest. The routes that change the store are in :mod:`.uploads`.
Every client mistake is a :class:`~rootml.exceptions.RequestError` (or another
:class:`~rootml.exceptions.RootmlError`, answered 400) and comes back as ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from ..exceptions import RequestError, RootmlError
from . import extensions, protocols
from .auth import CHALLENGE, load_token
from .backends import LoadedModel, import_backends
from .bodies import JSONResponse, error_response, read_decoded, read_json
from .config import ServerConfig
from .openapi import openapi_document
from .prometheus import CountRequests, Metrics, metrics_route
from .store import ModelStore
from .uploads import delete, get_params, models, post_params, upload

log = logging.getLogger(__name__)

UPLOAD_SLOTS = 2  # uploads unpacked at once per worker; others wait (disk and memory bound)
GRPC_GRACE_S = 10  # in-flight gRPC calls get this long to finish when the server stops

# ------------------------------------------------------------------ prediction


async def _run(request: Request, model: LoadedModel, x: np.ndarray) -> np.ndarray:
    return await extensions.run_counted(request.app.state.stats, model, x)


async def _model_for(request: Request, doc: dict) -> LoadedModel:
    """The model a ``/json`` body names (``model``, or ``name`` as some TFaaS docs write it),
    else the default one."""
    store: ModelStore = request.app.state.store
    name = doc.get("model")
    alias = doc.get("name")
    if name not in (None, "") and alias not in (None, "") and alias != name:
        raise RequestError(
            400,
            f"the body names two models, 'model' {str(name)[:64]!r} and 'name' "
            f"{str(alias)[:64]!r}: give one",
        )
    if name in (None, ""):
        name = alias
    if name in (None, ""):
        name = store.current()
        if name is None:
            raise RequestError(400, "the body names no 'model' and there is no default model")
    return await store.get(name)


async def predict_json(request: Request) -> Response:
    """TFaaS ``/json``: one row -> a flat list, rows -> a list of lists; also events."""
    doc = protocols.object_of(await read_json(request, request.app.state.config.max_request_bytes))
    model = await _model_for(request, doc)
    x, single = protocols.tfaas_rows(doc, model)
    out = await _run(request, model, x)
    return JSONResponse(out[0] if single else out)


async def v2_infer(request: Request) -> Response:
    _check_version(request)
    limit = request.app.state.config.max_request_bytes
    body = await read_decoded(request, limit)
    header = request.headers.get("inference-header-content-length")
    tail: bytes | memoryview = b""
    if header is not None:
        try:
            cut = int(header)
        except ValueError:
            cut = -1
        if not 0 <= cut <= len(body):
            raise RequestError(400, "Inference-Header-Content-Length is not a valid length")
        view = memoryview(body)
        body, tail = view[:cut], view[cut:]  # no copies of a large binary tensor
    doc = protocols.object_of(protocols.loads(body))
    model = await request.app.state.store.get(request.path_params["name"])
    x = protocols.v2_rows(doc, model, tail)
    binary = protocols.v2_binary_output(doc, model)
    out = await _run(request, model, x)
    reply, data = protocols.v2_reply(doc, model, out, binary)
    if not binary:
        return JSONResponse(reply)
    head = protocols.dumps(reply)
    return Response(
        head + data,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


async def tfserving_predict(request: Request) -> Response:
    _check_version(request)
    doc = protocols.object_of(await read_json(request, request.app.state.config.max_request_bytes))
    model = await request.app.state.store.get(request.path_params["name"])
    x, key = protocols.tfserving_rows(doc, model)
    return JSONResponse({key: await _run(request, model, x)})


def _check_version(request: Request) -> None:
    protocols.check_version(
        request.path_params.get("version", "1"), request.path_params.get("label")
    )


_TFSERVING_METHODS = (":predict", ":classify", ":regress")


def _no_get_of_a_method(request: Request) -> None:
    """``GET /v1/models/m:predict`` matches the status route with the name ``m:predict``: it is
    a method that takes POST (405), not a model name."""
    name = request.path_params.get("name", "")
    if name.endswith(_TFSERVING_METHODS):
        raise HTTPException(405, headers={"Allow": "POST"})


# ------------------------------------------------------------------ metadata and health


def _meminfo() -> dict:
    fields = {}
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024
    total = fields.get("MemTotal", 0)
    free = fields.get("MemAvailable", fields.get("MemFree", 0))
    swap_total, swap_free = fields.get("SwapTotal", 0), fields.get("SwapFree", 0)

    def block(t: int, f: int) -> dict:
        return {
            "total": t,
            "free": f,
            "used": t - f,
            "usedPercent": 100.0 * (t - f) / t if t else 0.0,
        }

    return {"Virtual": block(total, free), "Swap": block(swap_total, swap_free)}


def _cpu_percent() -> list[float]:
    """Busy share of each CPU since boot, from /proc/stat (TFaaS's ``CPU`` field)."""
    out = []
    with contextlib.suppress(OSError, ValueError), open("/proc/stat") as handle:
        for line in handle:
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu":
                ticks = [int(f) for f in fields]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                total = sum(ticks[:8])
                out.append(round(100.0 * (total - idle) / total, 2) if total else 0.0)
    return out


def _rss() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


async def status(request: Request) -> Response:
    state = request.app.state
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return JSONResponse(
        {
            "NGo": threading.active_count(),
            "Memory": _meminfo(),
            "Load": {"load1": load[0], "load5": load[1], "load15": load[2]},
            "CPU": _cpu_percent(),
            "Uptime": time.time() - state.started,
            "getRequests": state.counts.get("GET", 0),
            "postRequests": state.counts.get("POST", 0),
            "server": "rootml",
            "version": __version__,
            "pid": os.getpid(),
            "rss_bytes": _rss(),
            "models": state.store.names(),
            "cached": state.store.cached(),
            "loads": state.store.loads,
        }
    )


async def v2_server(_request: Request) -> Response:
    return JSONResponse(
        {
            "name": "rootml",
            "version": __version__,
            "extensions": ["binary_tensor_data", "tfaas", "tfserving_rest", "named_events"],
        }
    )


async def live(_request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": bool(request.app.state.ready)})


async def v2_model(request: Request) -> Response:
    _check_version(request)
    model = await request.app.state.store.get(request.path_params["name"])
    return JSONResponse(model.metadata())


async def v2_model_ready(request: Request) -> Response:
    _check_version(request)
    model = await request.app.state.store.get(request.path_params["name"])
    return JSONResponse({"name": model.name, "ready": True})


async def tfserving_status(request: Request) -> Response:
    _no_get_of_a_method(request)
    _check_version(request)
    await request.app.state.store.get(request.path_params["name"])
    return JSONResponse(
        {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }
    )


async def tfserving_metadata(request: Request) -> Response:
    _check_version(request)
    model = await request.app.state.store.get(request.path_params["name"])

    def tensor(name: str, width: int) -> dict:
        dims = [{"size": "-1", "name": ""}, {"size": str(width), "name": ""}]
        return {"dtype": "DT_FLOAT", "tensor_shape": {"dim": dims}, "name": name}

    signature = {
        "inputs": {model.input_name: tensor(model.input_name, model.dim)},
        "outputs": {model.output_name: tensor(model.output_name, model.outputs)},
        "method_name": "tensorflow/serving/predict",
    }
    return JSONResponse(
        {
            "model_spec": {"name": model.name, "signature_name": "", "version": "1"},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        }
    )


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(__version__, token=bool(request.app.state.token)))


async def index(_request: Request) -> Response:
    return JSONResponse(
        {
            "server": "rootml",
            "version": __version__,
            "models": "/models",
            "openapi": "/openapi.json",
        }
    )


# ------------------------------------------------------------------ errors


async def _on_request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    headers = {"WWW-Authenticate": CHALLENGE} if exc.status == 401 else None
    if exc.status == 401:
        log.warning("refused %s %s: %s", request.method, request.url.path, exc)
    return error_response(exc.status, str(exc), headers)


async def _on_rootml_error(_request: Request, exc: Exception) -> Response:
    return error_response(400, str(exc))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path[:200]}; see /openapi.json"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path[:200]}"
    return error_response(exc.status_code, str(message), exc.headers)


async def _on_disconnect(_request: Request, _exc: Exception) -> Response:
    return error_response(400, "the client disconnected before sending the whole body")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; see the server log")


# ------------------------------------------------------------------ the application


class _GzipWhenAccepted:
    """Starlette's GZipMiddleware (replies of 1 KiB or more), only for a request whose
    Accept-Encoding names gzip: its pass-through path costs ~20 us per request, a tenth of
    a small prediction's time."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=1024)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and any(
            key == b"accept-encoding" and b"gzip" in value for key, value in scope["headers"]
        ):
            await self.gzip(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _routes() -> list[Route]:
    v2 = "/v2/models/{name}"
    v2v = "/v2/models/{name}/versions/{version}"
    v1 = "/v1/models/{name}"
    return [
        Route("/json", predict_json, methods=["POST"]),
        Route("/predict/json", predict_json, methods=["POST"]),
        Route(f"{v2}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/stats", extensions.model_stats, methods=["GET"]),  # before {name}
        Route(f"{v2v}/infer", v2_infer, methods=["POST"]),
        Route(v1 + ":predict", tfserving_predict, methods=["POST"]),
        Route(v1 + "/versions/{version}:predict", tfserving_predict, methods=["POST"]),
        Route(v1 + "/labels/{label}:predict", tfserving_predict, methods=["POST"]),
        Route("/upload", upload, methods=["POST"]),
        Route("/delete", delete, methods=["DELETE"]),
        Route("/delete/{name}", delete, methods=["DELETE"]),
        Route("/models", models, methods=["GET"]),
        Route("/params", post_params, methods=["POST"]),
        Route("/params/{name}", get_params, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
        Route("/v2", v2_server, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route(v2, v2_model, methods=["GET"]),
        Route(v2v, v2_model, methods=["GET"]),
        Route(f"{v2}/ready", v2_model_ready, methods=["GET"]),
        Route(f"{v2v}/ready", v2_model_ready, methods=["GET"]),
        Route(v1, tfserving_status, methods=["GET"]),
        Route(v1 + "/versions/{version}", tfserving_status, methods=["GET"]),
        Route(v1 + "/metadata", tfserving_metadata, methods=["GET"]),
        Route(v1 + "/versions/{version}/metadata", tfserving_metadata, methods=["GET"]),
        Route(v1 + "/labels/{label}", tfserving_status, methods=["GET"]),
        Route(v1 + "/labels/{label}/metadata", tfserving_metadata, methods=["GET"]),
        Route(f"{v2}/config", extensions.model_config, methods=["GET"]),
        Route(f"{v2v}/config", extensions.model_config, methods=["GET"]),
        Route(f"{v2}/stats", extensions.model_stats, methods=["GET"]),
        Route(f"{v2v}/stats", extensions.model_stats, methods=["GET"]),
        Route("/v2/repository/index", extensions.repository_index, methods=["POST"]),
        Route("/v2/repository/models/{name}/load", extensions.load, methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", extensions.unload, methods=["POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/", index, methods=["GET"]),
    ]


def create_app(config: ServerConfig) -> Starlette:
    """The ASGI application for ``config``; the store opens in the lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.ready = False
        app.state.token = load_token(config.token_file) if config.token_file else None
        store = ModelStore(
            config.models,
            cache_size=config.cache_size,
            threads=config.threads,
            run_hooks=config.run_bundle_hooks,
        )
        await anyio.to_thread.run_sync(store.clean)
        app.state.store = store
        app.state.upload_slots = asyncio.Semaphore(UPLOAD_SLOTS)
        app.state.started = time.time()
        threading.Thread(target=import_backends, name="import-backends", daemon=True).start()
        await store.preload()
        grpc_server = None
        if config.grpc_port is not None:
            from . import kserve_grpc

            grpc_server = await kserve_grpc.start(
                app.state,
                config.host,
                config.grpc_port,
                config.max_request_bytes,
                shared=config.workers > 1,
            )
        app.state.ready = True
        log.info(
            "serving %d models from %s (%s)",
            len(store.names()),
            store.root,
            "token required for changes" if app.state.token else "no token",
        )
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(GRPC_GRACE_S)

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        exception_handlers={
            RequestError: _on_request_error,
            RootmlError: _on_rootml_error,
            HTTPException: _on_http_error,
            ClientDisconnect: _on_disconnect,
            Exception: _on_unexpected,
        },
    )
    app.state.config = config
    app.state.counts = {}
    app.state.stats = {}
    app.state.metrics = Metrics(lambda: getattr(app.state, "store", None), app.state.stats)
    app.state.ready = False
    app.add_middleware(_GzipWhenAccepted)
    app.add_middleware(CountRequests, metrics=app.state.metrics, counts=app.state.counts)
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` (several worker processes): the configuration comes
    from the ``ROOTML_SERVE_CONFIG`` environment variable (JSON; no secrets, only paths).
    A worker process does not run the CLI, so its log handler is set up here."""
    config = ServerConfig.from_json(os.environ["ROOTML_SERVE_CONFIG"])
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format=f"%(levelname)s %(name)s[{os.getpid()}]: %(message)s",
    )
    return create_app(config)
