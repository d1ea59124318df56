"""TensorFlow models made elsewhere, converted once at upload to ``model.onnx`` when exact.

What every Go TFaaS user has is a SavedModel without ``model.onnx``, or TFaaS's classic
TF1-style frozen graph (``model.pb``, a GraphDef, with ``inputNode``/``outputNode`` in
params.json). TensorFlow serves one request at a time at a few hundred microseconds of
overhead each; onnxruntime does the same work in microseconds. So an upload without
``model.onnx`` is converted with tf2onnx, in a child process (TensorFlow is imported only
there, and only for such uploads), and the conversion is kept only when it is exact: the
converted graph and TensorFlow give the same outputs, within 1e-5, on generated rows (normal,
uniform on [0, 1], zeros, large values, and for a rootml bundle NaN entries). ``conversion.json`` in the stored model records what
was checked. A model whose conversion is not exact is served through TensorFlow instead, with
concurrent requests batched (:class:`.backends.BatchedCalls`); one that TensorFlow cannot load
either (a frozen graph without its nodes in params.json, not a GraphDef) is refused with the
reason.

    python -m rootml.server.convert FOLDER      # what the upload runs; exit 0: model.onnx written
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..exceptions import RequestError

log = logging.getLogger(__name__)

RECORD = "conversion.json"
FROZEN_GRAPH = "model.pb"
TOLERANCE = 1e-5  # |onnx - tf| <= TOLERANCE * (1 + |tf|) on every checked output
TIMEOUT_S = 300
OPSET = 17


class NotConverted(Exception):
    """The conversion ran and is not exact, or could not run; the message says why."""


def needs_conversion(folder: Path) -> str | None:
    """``"saved_model"`` or ``"frozen_graph"`` for an upload without ``model.onnx``."""
    if (folder / "model.onnx").exists():
        return None
    if (folder / "saved_model.pb").exists():
        return "saved_model"
    if (folder / FROZEN_GRAPH).exists():
        return "frozen_graph"
    return None


def convert_in_child(folder: Path, timeout: float = TIMEOUT_S) -> dict:
    """Run the conversion of ``folder`` in a child interpreter; its record, or raise
    :class:`NotConverted` with the child's reason."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "rootml.server.convert", str(folder)]
    try:
        done = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        raise NotConverted(f"the conversion to ONNX took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise NotConverted(lines[-1] if lines else f"the converter exited {done.returncode}")
    return json.loads((folder / RECORD).read_text("utf-8"))


def check_rows(dim: int, nan: bool, seed: int = 7) -> np.ndarray:
    """The rows both graphs are run on: normal, uniform on [0, 1], zeros, large values, and
    with ``nan`` rows with NaN entries. A rootml SavedModel (one with a layout) pads a NaN as
    a missing object, and a conversion that lets the NaN through, as tf2onnx does with
    ``tf.where`` of a constant, is caught by them; what another network makes of a NaN is
    undefined (ReLU gives NaN in TensorFlow, 0 in onnxruntime), so they are left out there."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.normal(size=(128, dim)),
        rng.uniform(size=(128, dim)),
        np.zeros((1, dim)),
        rng.normal(scale=1e3, size=(16, dim)),
    ]
    if nan:
        with_nan = rng.normal(size=(16, dim))
        with_nan[np.arange(16), rng.integers(0, dim, 16)] = np.nan
        parts.append(with_nan)
    return np.concatenate(parts).astype(np.float32)


def compare(reference: np.ndarray, converted: np.ndarray) -> float:
    """The largest relative difference (|a - b| / (1 + |a|)); inf when shapes differ or the
    converted graph gives a non-finite value where TensorFlow gives a finite one."""
    if reference.shape != converted.shape:
        return float("inf")
    finite = np.isfinite(reference)
    if not np.array_equal(finite, np.isfinite(converted)):
        return float("inf")
    diff = np.abs(reference[finite] - converted[finite]) / (1 + np.abs(reference[finite]))
    return float(diff.max()) if diff.size else 0.0


# ------------------------------------------------------------------ in the child process


def _saved_model(folder: Path, params: dict):
    """The SavedModel's serving function (:func:`.backends.serving_signature`) as a
    tf.function of one input, for tf2onnx; its input spec, a runner and the width."""
    import tensorflow as tf

    from .backends import serving_signature

    loaded, signature, in_name, out_name, dim, _ = serving_signature(folder, params)
    tensor = tf.TensorSpec([None, dim], tf.float32, name=in_name)

    @tf.function(input_signature=[tensor], autograph=False)
    def serve(x):
        return {out_name: signature(**{in_name: x})[out_name]}

    def run(x: np.ndarray) -> np.ndarray:
        return serve(tf.constant(x))[out_name].numpy()

    return serve, tensor, run, dim, loaded


def frozen_graph(folder: Path, params: dict):
    """TFaaS's frozen GraphDef: the input and output nodes params.json names."""
    import tensorflow as tf

    in_node = params.get("inputNode", params.get("input_node"))
    out_node = params.get("outputNode", params.get("output_node"))
    if not isinstance(in_node, str) or not isinstance(out_node, str):
        raise NotConverted(
            "params.json must name the frozen graph's 'inputNode' and 'outputNode' (TFaaS's keys)"
        )
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString((folder / FROZEN_GRAPH).read_bytes())
    except Exception as err:  # noqa: BLE001  # protobuf's DecodeError and friends
        raise NotConverted(f"{FROZEN_GRAPH} is not a TensorFlow GraphDef: {err}") from None
    nodes = {n.name: n for n in graph_def.node}
    for role, node in (("inputNode", in_node), ("outputNode", out_node)):
        if node.split(":")[0] not in nodes:
            raise NotConverted(f"params.json's {role} {node!r} is not a node of {FROZEN_GRAPH}")
    dims = [d.size for d in nodes[in_node.split(":")[0]].attr["shape"].shape.dim]
    if len(dims) != 2 or dims[1] <= 0:
        raise NotConverted(
            f"the input node {in_node!r} must be a placeholder [batch, features], got {dims}"
        )
    in_tensor, out_tensor = (n if ":" in n else f"{n}:0" for n in (in_node, out_node))

    def imported(x):
        return tf.graph_util.import_graph_def(
            graph_def, input_map={in_tensor: x}, return_elements=[out_tensor]
        )[0]

    wrapped = tf.compat.v1.wrap_function(imported, [tf.TensorSpec([None, dims[1]], tf.float32)])

    def run(x: np.ndarray) -> np.ndarray:
        return wrapped(tf.constant(x)).numpy()

    return graph_def, (in_tensor, out_tensor), run, dims[1], wrapped


def convert(folder: Path) -> dict:
    """Convert ``folder``'s model to ``folder/model.onnx`` if exact; the record."""
    import onnxruntime as ort
    import tf2onnx

    kind = needs_conversion(folder)
    if kind is None:
        raise NotConverted("nothing to convert: no saved_model.pb or model.pb without model.onnx")
    params = json.loads((folder / "params.json").read_text("utf-8"))
    if kind == "saved_model":
        serve, tensor, run, dim, _keep = _saved_model(folder, params)
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[tensor], opset=OPSET)
    else:
        graph_def, (in_tensor, out_tensor), run, dim, _keep = frozen_graph(folder, params)
        proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, input_names=[in_tensor], output_names=[out_tensor], opset=OPSET
        )
    blob = proto.SerializeToString()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    has_layout = any((folder / n).exists() for n in ("layout.json", "specs.json"))
    x = check_rows(dim, nan=has_layout)
    feed = {session.get_inputs()[0].name: x}
    worst = compare(np.asarray(run(x), np.float32), session.run(None, feed)[0])
    record = {
        "from": kind,
        "tf2onnx": tf2onnx.__version__,
        "opset": OPSET,
        "checked_rows": len(x),
        "max_difference": worst if np.isfinite(worst) else None,  # None: NaN where TF had none
        "tolerance": TOLERANCE,
        "exact": worst <= TOLERANCE,
    }
    (folder / RECORD).write_text(json.dumps(record, indent=1) + "\n", "utf-8")
    if not record["exact"]:
        raise NotConverted(
            f"the ONNX conversion differs from TensorFlow by {worst:.2g} (more than "
            f"{TOLERANCE:g}) on generated rows"
        )
    (folder / "model.onnx").write_bytes(blob)
    return record


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        convert(Path(sys.argv[1]))
    except (NotConverted, RequestError) as err:  # RequestError: the SavedModel's checks
        sys.stderr.write(f"{err}\n")  # the last line is the reason the upload gives
        raise SystemExit(1) from None
    except ImportError as err:
        sys.stderr.write(
            f"TensorFlow and tf2onnx (rootml[convert]) are needed to convert it: {err}\n"
        )
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
