"""Model backends: a bundle folder checked and loaded into a callable, onnxruntime first.

:func:`load_model` reads ``params.json`` (which must name the model), the specs when there
are any (through :func:`rootml.bundle.load_bundle` for a complete rootml bundle), and opens
``model.onnx`` with onnxruntime (from bytes, so no external-data path can point outside the
bundle), or, for a bundle without it, the SavedModel's ``serving_default`` signature through
TensorFlow, which is imported only then. Never ``Model.predict``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..exceptions import RequestError, RootmlError, format_closest
from ..layout import digest_of

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
OUTPUT_KEY = "scores"
_MAX_ORDERS = 64


class Missing(Exception):
    """A model's files vanished while it was loading (a concurrent re-upload or delete)."""


@dataclass
class LoadedModel:
    """A model ready to run: ``run(x)`` maps float32 ``[n, dim]`` raw rows to outputs."""

    name: str
    version: str
    path: Path
    params: dict
    layout: dict | None
    backend: str
    input_name: str
    output_name: str
    dim: int
    outputs: int
    run: Callable[[np.ndarray], np.ndarray]
    features: list[str] | None = None
    #: the layout's preprocessing(rec)/preprocess_chunk, loaded only when the server runs
    #: bundle hooks (ServerConfig.run_bundle_hooks)
    hook: tuple[str, Callable] | None = None
    inline_rows: int = 256  # batches up to this size run on the event loop (ORT: microseconds)
    _orders: dict = field(default_factory=dict, repr=False)

    def order(self, keys: object) -> np.ndarray | None:
        """The column permutation taking rows given in ``keys`` order to the model's
        ``features`` order (``None`` when no reordering is needed)."""
        if keys is None or keys == []:
            return None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise RequestError(400, "'keys' must be a list of feature names (strings)")
        if len(keys) != self.dim:
            raise RequestError(
                400,
                f"'keys' names {len(keys)} features but model {self.name!r} takes {self.dim}; "
                "GET /params/NAME lists them under 'features'",
            )
        if self.features is None or keys == self.features:
            return None
        cached = self._orders.get(tuple(keys))
        if cached is not None:
            return cached
        position = {k: i for i, k in enumerate(keys)}
        if len(position) != len(keys):
            dup = next(k for i, k in enumerate(keys) if position[k] != i)
            raise RequestError(400, f"'keys' lists feature {dup!r} twice")
        unknown = [k for k in keys if k not in set(self.features)]
        if unknown:
            raise RequestError(
                400,
                f"'keys' has {unknown[0]!r}, which model {self.name!r} does not take "
                f"({format_closest(unknown[0], self.features, 3)})",
            )
        perm = np.array([position[f] for f in self.features], dtype=np.intp)
        if len(self._orders) < _MAX_ORDERS:
            self._orders[tuple(keys)] = perm
        return perm

    def metadata(self) -> dict:
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx" if self.backend == "onnx" else "tensorflow_savedmodel",
            "inputs": [{"name": self.input_name, "datatype": "FP32", "shape": [-1, self.dim]}],
            "outputs": [
                {"name": self.output_name, "datatype": "FP32", "shape": [-1, self.outputs]}
            ],
            "parameters": {
                "features": self.features,
                "classes": self.params.get("classes"),
                "layout_digest": digest_of(self.params),
                "derived_features": self.params.get("derived_features", []),
                "specs_digest": digest_of(self.params),  # the 0.1 name; clients may read it
            },
        }


# ------------------------------------------------------------------ backends


def import_backends() -> None:
    """Import what loading an ONNX bundle needs (onnxruntime, the bundle and layout checks):
    the server calls it in a thread at start, so the first upload or load does not pay it."""
    import onnxruntime  # noqa: F401

    from .. import bundle, layout  # noqa: F401


def _onnx_backend(path: Path, threads: int) -> dict:
    import onnxruntime as ort

    try:
        blob = (path / ONNX_FILE).read_bytes()
    except FileNotFoundError:
        raise Missing(str(path)) from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        # from bytes: an external-data reference cannot reach files outside the bundle
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001  # onnxruntime raises its own untyped errors
        raise RequestError(400, f"model.onnx does not load in onnxruntime: {err}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 2:
        raise RequestError(
            400, "model.onnx must take one float tensor [batch, features] (rootml train's export)"
        )
    dim = inputs[0].shape[1]
    if not isinstance(dim, int):
        raise RequestError(400, "model.onnx must fix the feature dimension of its input")
    out = next((o for o in outputs if o.name == OUTPUT_KEY), outputs[0])
    width = out.shape[-1] if len(out.shape) == 2 and isinstance(out.shape[-1], int) else -1
    in_name, out_names = inputs[0].name, [out.name]

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(out_names, {in_name: x})[0]

    return {
        "backend": "onnx",
        "input_name": in_name,
        "output_name": out.name,
        "dim": dim,
        "outputs": width,
        "run": run,
    }


class BatchedCalls:
    """Concurrent calls of ``fn`` (rows in, rows out) folded into one call per batch.

    TensorFlow spends a few hundred microseconds per call whatever its size, so a server that
    calls it once per single-row request is slow and its latency grows with the queue. Each
    caller (a worker thread of the server) puts its rows in a queue and waits; one thread runs
    whatever is waiting, up to ``max_rows``, as one call and hands every caller its share. No
    timer: while one batch runs the next gathers, so a lone request waits for nobody. The
    thread ends after ``idle_s`` without calls (an unloaded model is not kept alive by it).
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], max_rows: int = 4096,
                 idle_s: float = 30.0) -> None:  # fmt: skip
        import queue
        import threading

        self.fn, self.max_rows, self.idle_s = fn, max_rows, idle_s
        self.pending: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import threading

        call = {"x": x, "done": threading.Event()}
        self._submit(call)
        call["done"].wait()
        if "error" in call:
            raise call["error"]
        return call["out"]

    async def acall(self, x: np.ndarray) -> np.ndarray:
        """The same from the event loop: no worker thread waits, the batch thread resolves a
        future of this loop (one thread hop per request instead of two)."""
        import asyncio

        loop = asyncio.get_running_loop()
        call = {"x": x, "future": loop.create_future(), "loop": loop}
        self._submit(call)
        return await call["future"]

    def _submit(self, call: dict) -> None:
        import threading

        self.pending.put(call)
        with self.lock:
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._serve, name="tf-batches", daemon=True)
                self.thread.start()

    def _serve(self) -> None:
        import queue

        while True:
            try:
                calls = [self.pending.get(timeout=self.idle_s)]
            except queue.Empty:
                with self.lock:
                    if self.pending.empty():
                        self.thread = None
                        return
                continue
            rows = len(calls[0]["x"])
            while rows < self.max_rows:
                try:
                    calls.append(self.pending.get_nowait())
                except queue.Empty:
                    break
                rows += len(calls[-1]["x"])
            self._run(calls)

    def _run(self, calls: list[dict]) -> None:
        try:
            out = self.fn(
                np.concatenate([c["x"] for c in calls]) if len(calls) > 1 else calls[0]["x"]
            )
            start = 0
            for c in calls:
                c["out"] = out[start : start + len(c["x"])]
                start += len(c["x"])
        except Exception as err:  # noqa: BLE001  # every waiting caller gets the error
            for c in calls:
                c["error"] = err
        for c in calls:
            if "future" in c:
                c["loop"].call_soon_threadsafe(_settle, c)
            else:
                c["done"].set()


def _settle(call: dict) -> None:
    """Resolve an :meth:`BatchedCalls.acall` future (on its loop; a cancelled one is left)."""
    future = call["future"]
    if future.done():
        return
    if "error" in call:
        future.set_exception(call["error"])
    else:
        future.set_result(call["out"])


def _import_tensorflow():
    try:
        import tensorflow as tf  # only for bundles without model.onnx
    except ImportError:
        raise RequestError(
            400,
            "the bundle has no model.onnx and this server has no TensorFlow to convert or "
            "serve its model: add model.onnx (rootml train writes one), or run the server "
            "where rootml[convert] is installed (the rootml/serve image has it)",
        ) from None
    with contextlib.suppress(RuntimeError):  # once TensorFlow has started, it keeps its pools
        # one thread each: the server's workers share the cores, and TensorFlow's spinning
        # pools beside them gave latency spikes of a few hundred ms
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def _frozen_graph_backend(path: Path, params: dict) -> dict:
    """TFaaS's TF1 frozen graph (``model.pb``, ``inputNode``/``outputNode`` in params.json)
    through TensorFlow: for a graph whose ONNX conversion is not exact."""
    from .convert import NotConverted, frozen_graph

    log.info("%s is a frozen graph: serving it through TensorFlow", path)
    _import_tensorflow()
    try:
        _, (in_tensor, out_tensor), run, dim, keep = frozen_graph(path, params)
    except NotConverted as err:
        raise RequestError(400, f"the frozen graph cannot be served: {err}") from None
    probe = run(np.zeros((1, dim), np.float32))
    run.keep_alive = keep  # type: ignore[attr-defined]
    return {
        "backend": "tensorflow",
        "input_name": in_tensor.split(":")[0],
        "output_name": out_tensor.split(":")[0],
        "dim": dim,
        "outputs": int(probe.shape[-1]) if probe.ndim == 2 else -1,
        "run": BatchedCalls(run),
        "inline_rows": 0,
    }


def serving_signature(path: Path, params: dict):
    """The SavedModel's ``serving_default``: ``(loaded, signature, input name, output key,
    dim, width)``; one float input ``[batch, features]`` (params.json's ``input_name`` picks
    it among several), the output ``scores`` if there is one, else the first by name."""
    tf = _import_tensorflow()
    try:
        loaded = tf.saved_model.load(str(path))
        signature = loaded.signatures["serving_default"]
    except (OSError, KeyError, ValueError, tf.errors.OpError) as err:
        raise RequestError(400, f"the SavedModel does not load: {err}") from None
    specs = signature.structured_input_signature[1]
    wanted = str(params.get("input_name") or "").removeprefix("serving_default_").split(":")[0]
    in_name = wanted if wanted in specs else (next(iter(specs)) if len(specs) == 1 else None)
    if in_name is None or specs[in_name].shape.rank != 2 or specs[in_name].shape[1] is None:
        raise RequestError(
            400, "the SavedModel's serving_default must take one float tensor [batch, features]"
        )
    keys = sorted(signature.structured_outputs)
    out_name = OUTPUT_KEY if OUTPUT_KEY in keys else keys[0]
    width = signature.structured_outputs[out_name].shape[-1]
    dim = int(specs[in_name].shape[1])
    return loaded, signature, in_name, out_name, dim, int(width) if width is not None else -1


def _tensorflow_backend(path: Path, params: dict) -> dict:
    log.info("%s has no model.onnx: serving its SavedModel through TensorFlow", path)
    tf = _import_tensorflow()
    loaded, signature, in_name, out_name, dim, width = serving_signature(path, params)

    def run(x: np.ndarray) -> np.ndarray:
        return signature(**{in_name: tf.constant(x)})[out_name].numpy()

    run.keep_alive = loaded  # type: ignore[attr-defined]  # the signature needs its object
    return {
        "backend": "tensorflow",
        "input_name": in_name,
        "output_name": out_name,
        "dim": dim,
        "outputs": width,
        "run": BatchedCalls(run),
        "inline_rows": 0,
    }


def read_params(path: Path, name: str) -> dict:
    """``params.json`` of a bundle folder, checked to be an object naming ``name``."""
    try:
        params = json.loads((path / "params.json").read_text("utf-8"))
    except FileNotFoundError:
        raise RequestError(400, f"model {name!r} has no params.json; TFaaS needs one") from None
    except (OSError, ValueError) as err:
        raise RequestError(400, f"params.json of model {name!r} is not valid JSON: {err}") from None
    if not isinstance(params, dict):
        raise RequestError(400, f"params.json of model {name!r} must be a JSON object")
    if params.get("name") != name:
        raise RequestError(
            400,
            f"params.json names the model {params.get('name')!r} but it is uploaded as {name!r}; "
            "they must agree (rootml publish --name rewrites both)",
        )
    return params


def load_model(path: Path, name: str, version: str, threads: int = 1) -> LoadedModel:
    """Check a bundle folder and load its model (onnxruntime, else TensorFlow)."""
    from ..bundle import load_bundle, missing_files
    from ..layout import layout_in, load_layout

    if not path.is_dir():
        raise Missing(str(path))
    params = read_params(path, name)
    layout = None
    try:
        if not missing_files(path):
            layout = load_bundle(path).layout
        elif layout_in(path).exists():
            layout = load_layout(layout_in(path))
    except RootmlError as err:
        raise RequestError(400, f"model {name!r} is not a valid bundle: {err}") from None
    if (path / ONNX_FILE).exists():
        backend = _onnx_backend(path, threads)
    elif (path / "saved_model.pb").exists():
        backend = _tensorflow_backend(path, params)
    elif (path / "model.pb").exists():
        backend = _frozen_graph_backend(path, params)
    else:
        raise RequestError(
            400,
            f"model {name!r} has none of model.onnx, saved_model.pb or a frozen model.pb; "
            "upload a bundle",
        )
    features = params.get("features")
    if layout is not None:
        if features is not None and features != layout["features"]:
            raise RequestError(
                400, f"params.json 'features' of model {name!r} differ from its layout.json"
            )
        features = layout["features"]
    if features is not None and (not isinstance(features, list) or len(features) != backend["dim"]):
        raise RequestError(
            400,
            f"params.json of model {name!r} lists {len(features) if isinstance(features, list) else 'no'} "
            f"features but the model takes {backend['dim']}",
        )
    return LoadedModel(
        name=name, version=version, path=path, params=params, layout=layout,
        features=features, **backend,
    )  # fmt: skip


def tfaas_params(params: dict, when: float | None = None) -> dict:
    """``params.json`` as TFaaS's ``/models`` shows it: both key spellings, no empty timestamp."""
    out = {"model": "", "labels": "", "options": None, "description": ""}
    out.update(params)
    for camel, snake in (
        ("inputNode", "input_node"),
        ("outputNode", "output_node"),
        ("imgChannels", "img_channels"),
    ):
        value = params.get(camel, params.get(snake))
        if value is not None:
            out[camel] = out[snake] = value
    if not out.get("timestamp"):
        stamp = time.gmtime(when) if when is not None else time.gmtime()
        out["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)
    return out
