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

import itertools
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from starlette.requests import Request
from starlette.responses import Response

from .extensions import LATENCY_BUCKETS

#: the methods counted by name (a client may send any token as a method)
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")


class Metrics:
    """The app's metrics. Requests are counted by :class:`CountRequests`; the per-model
    inference figures are read at scrape time from the statistics the prediction path keeps
    for ``/v2/models/m/stats`` (``stats``: model name -> ModelStats), not counted twice."""

    def __init__(self, store_of: Callable[[], object | None], stats: dict) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rootml_http_requests", "HTTP requests", ["handler", "method", "code"], registry=r
        )
        self.latency = Histogram(
            "rootml_http_request_duration_seconds", "HTTP request latency", ["handler"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.uploads = Counter("rootml_uploads", "uploads", ["outcome"], registry=r)
        stored = Gauge("rootml_models_stored", "models in the store", registry=r)
        loaded = Gauge("rootml_models_loaded", "models loaded in this worker", registry=r)
        stored.set_function(lambda: len(_store_call(store_of, "names")))
        loaded.set_function(lambda: len(_store_call(store_of, "cached")))
        r.register(_Inferences(stats))


class _Inferences:
    """The per-model figures of ``stats`` as Prometheus families (a custom collector)."""

    def __init__(self, stats: dict) -> None:
        self.stats = stats

    def describe(self) -> list:
        return []  # collected fresh at every scrape

    def collect(self) -> Iterator:
        calls = CounterMetricFamily("rootml_inferences", "model calls", labels=["model"])
        rows = CounterMetricFamily("rootml_inference_rows", "rows scored", labels=["model"])
        errors = CounterMetricFamily(
            "rootml_inference_errors", "failed model calls", labels=["model"]
        )
        latency = HistogramMetricFamily(
            "rootml_inference_duration_seconds", "model call latency", labels=["model"]
        )
        for name, s in sorted(self.stats.items()):
            calls.add_metric([name], s.executions)
            rows.add_metric([name], s.inferences)
            errors.add_metric([name], s.fail.count)
            cumulative = list(itertools.accumulate(s.latency))
            buckets = [(str(b), c) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=False)]
            buckets.append(("+Inf", cumulative[-1]))
            latency.add_metric([name], buckets, s.success.ns / 1e9)
        yield from (calls, rows, errors, latency)


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
