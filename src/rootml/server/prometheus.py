"""``GET /metrics``: Prometheus text format (``prometheus-client``), one registry per app.

- ``rootml_http_requests_total{handler, method, code}`` and
  ``rootml_http_request_duration_seconds{handler}`` (a histogram): every request, labelled by
  the handler that answered (``predict_json``, ``v2_infer``, ``upload``, ...; ``none`` when no
  route matched) — never by the path a client sent, so a scan of random URLs adds no series;
- ``rootml_inferences_total{model}``, ``rootml_inference_rows_total{model}``,
  ``rootml_inference_errors_total{model}`` and ``rootml_inference_duration_seconds{model}``:
  per served model (the only model names used as labels are those the store loaded);
- ``rootml_models_stored`` and ``rootml_models_loaded``: read from the store when scraped;
- ``rootml_uploads_total{outcome}``: installed or refused uploads.

With several uvicorn workers each process has its own counts; a scrape sees the one that
answered (as ``/status`` and the V2 statistics do).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

#: the methods counted by name (a client may send any token as a method)
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")

#: request latencies of a server that answers in microseconds to seconds
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The app's metrics; :meth:`inference` is called by the prediction path."""

    def __init__(self, store_of: Callable[[], object | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rootml_http_requests", "HTTP requests", ["handler", "method", "code"], registry=r
        )
        self.latency = Histogram(
            "rootml_http_request_duration_seconds", "HTTP request latency", ["handler"],
            buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.inferences = Counter("rootml_inferences", "model calls", ["model"], registry=r)
        self.rows = Counter("rootml_inference_rows", "rows scored", ["model"], registry=r)
        self.errors = Counter(
            "rootml_inference_errors", "failed model calls", ["model"], registry=r
        )
        self.infer_latency = Histogram(
            "rootml_inference_duration_seconds", "model call latency", ["model"],
            buckets=BUCKETS, registry=r,
        )  # fmt: skip
        self.uploads = Counter("rootml_uploads", "uploads", ["outcome"], registry=r)
        stored = Gauge("rootml_models_stored", "models in the store", registry=r)
        loaded = Gauge("rootml_models_loaded", "models loaded in this worker", registry=r)
        stored.set_function(lambda: len(_store_call(store_of, "names")))
        loaded.set_function(lambda: len(_store_call(store_of, "cached")))

    def inference(self, model: str, rows: int, seconds: float, ok: bool) -> None:
        if ok:
            self.inferences.labels(model).inc()
            self.rows.labels(model).inc(rows)
            self.infer_latency.labels(model).observe(seconds)
        else:
            self.errors.labels(model).inc()


def _store_call(store_of: Callable[[], object | None], method: str) -> list:
    store = store_of()
    return getattr(store, method)() if store is not None else []


class CountRequests:
    """ASGI middleware: counts and times every request by the handler that answered it, and
    by method in ``counts`` (``/status``'s TFaaS getRequests/postRequests)."""

    def __init__(self, app: Callable, metrics: Metrics, counts: dict) -> None:
        self.app = app
        self.metrics = metrics
        self.counts = counts
        self._children: dict[tuple, tuple] = {}  # labels -> (counter, histogram): no lookups

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        self.counts[method] = self.counts.get(method, 0) + 1
        t0 = time.perf_counter()
        code = 500

        async def sending(message: dict) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            handler = getattr(scope.get("endpoint"), "__name__", "none")
            key = (handler, method, code)
            children = self._children.get(key)
            if children is None:
                children = (
                    self.metrics.requests.labels(handler, method, str(code)),
                    self.metrics.latency.labels(handler),
                )
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - t0)


async def metrics_route(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
