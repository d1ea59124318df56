"""KServe V2 / Triton extensions that clients such as ``tritonclient`` call: the model
configuration, the model repository (index, load, unload) and per-model statistics.

- ``GET /v2/models/{m}/config``: Triton's model configuration (``get_model_config``): the
  platform, and the one input and output with their Triton types and dims; ``max_batch_size``
  is 0, so the dims carry the batch dimension (-1) as the metadata's shapes do.
- ``POST /v2/repository/index``: every stored model with its version and state (``READY`` when
  loaded in this worker, ``UNAVAILABLE`` when only on disk); ``{"ready": true}`` lists the
  loaded ones only.
- ``POST /v2/repository/models/{m}/load`` and ``.../unload``: load a stored model into memory
  or drop it from this worker's cache (the stored bundle stays; the next request loads it
  again). Both change server state and need the token when one is set.
- ``GET /v2/models/{m}/stats`` (and ``/v2/models/stats`` for all): Triton's statistics
  extension: inference and execution counts, success and failure counts and nanoseconds,
  the time of the last inference. The counts are this worker process's since it started.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from ..exceptions import RequestError
from .auth import require_token
from .bodies import JSONResponse, read_decoded
from .protocols import loads, object_of

if TYPE_CHECKING:
    import numpy as np

    from .backends import LoadedModel
    from .store import ModelStore


@dataclass
class Counter:
    count: int = 0
    ns: int = 0

    def json(self) -> dict:
        return {"count": self.count, "ns": self.ns}


#: upper bounds (seconds) of the model-call latency histogram /metrics exposes
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
)


@dataclass
class ModelStats:
    """One model's inference counts in this worker: Triton's statistics fields, and the
    latency histogram (calls per :data:`LATENCY_BUCKETS` bound, the last for larger) that
    ``/metrics`` exposes from the same record."""

    inferences: int = 0  # rows
    executions: int = 0  # calls of the model
    last_ms: int = 0
    success: Counter = field(default_factory=Counter)
    fail: Counter = field(default_factory=Counter)
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def record(self, rows: int, ns: int, ok: bool) -> None:
        self.last_ms = int(time.time() * 1000)
        if ok:
            self.inferences += rows
            self.executions += 1
            self.success.count += 1
            self.success.ns += ns
            self.latency[bisect.bisect_left(LATENCY_BUCKETS, ns / 1e9)] += 1
        else:
            self.fail.count += 1
            self.fail.ns += ns

    def json(self, name: str) -> dict:
        zero = Counter().json()
        return {
            "name": name,
            "version": "1",
            "last_inference": self.last_ms,
            "inference_count": self.inferences,
            "execution_count": self.executions,
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": zero,
                "compute_input": zero,
                "compute_infer": self.success.json(),
                "compute_output": zero,
            },
            "batch_stats": [],
        }


TRITON_TYPES = {"FP32": "TYPE_FP32"}


async def run_counted(stats: dict[str, ModelStats], model: LoadedModel, x: np.ndarray):
    """``model.run(x)``, on the event loop for small batches, else in a thread; counted in
    ``stats`` (the /v2/models/m/stats and /metrics figures) for HTTP and gRPC alike."""
    record = stats.get(model.name)
    if record is None:
        record = stats[model.name] = ModelStats()
    t0 = time.perf_counter_ns()
    ok = False
    try:
        batched = getattr(model.run, "acall", None)  # TensorFlow: concurrent calls batched
        if batched is not None:
            out = await batched(x)
        elif len(x) <= model.inline_rows:
            out = model.run(x)
        else:
            out = await anyio.to_thread.run_sync(model.run, x)
        ok = True
        return out
    finally:
        record.record(len(x), time.perf_counter_ns() - t0, ok)


def config_of(model: LoadedModel) -> dict:
    """Triton's model configuration of ``model`` (``get_model_config``)."""
    meta = model.metadata()

    def tensor(doc: dict) -> dict:
        return {
            "name": doc["name"],
            "data_type": TRITON_TYPES[doc["datatype"]],
            "dims": doc["shape"],
        }

    return {
        "name": model.name,
        "platform": meta["platform"],
        "backend": "onnxruntime" if model.backend == "onnx" else "tensorflow",
        "max_batch_size": 0,
        "input": [tensor(t) for t in meta["inputs"]],
        "output": [tensor(t) for t in meta["outputs"]],
        "parameters": {
            key: {"string_value": str(value)}
            for key, value in meta["parameters"].items()
            if value is not None
        },
    }


def index_of(store: ModelStore, ready_only: bool) -> list[dict]:
    """The repository index: every stored model, or the loaded ones only."""
    loaded = set(store.cached())
    return [
        {"name": name, "version": "1", "state": "READY" if name in loaded else "UNAVAILABLE"}
        for name in store.names()
        if name in loaded or not ready_only
    ]


async def unload_model(store: ModelStore, name: str) -> None:
    """Drop ``name`` from this worker's cache (404 with the closest names if unknown)."""
    if name not in store.names():
        await store.get(name)
    store.forget(name)


def stats_of(stats: dict[str, ModelStats], names: list[str] | None) -> list[dict]:
    """Triton's statistics of ``names`` (every model run so far when None)."""
    return [stats.get(n, ModelStats()).json(n) for n in (sorted(stats) if names is None else names)]


async def model_config(request: Request) -> Response:
    model = await request.app.state.store.get(request.path_params["name"])
    return JSONResponse(config_of(model))


async def repository_index(request: Request) -> Response:
    body = await read_decoded(request, request.app.state.config.max_request_bytes)
    ready_only = object_of(loads(body)).get("ready", False) if body else False
    if not isinstance(ready_only, bool):
        raise RequestError(400, f"'ready' must be true or false, got {str(ready_only)[:32]}")
    return JSONResponse(index_of(request.app.state.store, ready_only))


async def load(request: Request) -> Response:
    require_token(request.app.state.token, request.headers.get("authorization"))
    await request.app.state.store.get(request.path_params["name"])
    return JSONResponse({})


async def unload(request: Request) -> Response:
    require_token(request.app.state.token, request.headers.get("authorization"))
    await unload_model(request.app.state.store, request.path_params["name"])
    return JSONResponse({})


async def model_stats(request: Request) -> Response:
    name = request.path_params.get("name")
    names = None
    if name is not None:
        await request.app.state.store.get(name)  # 404 for an unknown model
        names = [name]
    return JSONResponse({"model_stats": stats_of(request.app.state.stats, names)})
