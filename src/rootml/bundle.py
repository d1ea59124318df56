"""The model bundle: one directory that TFaaS (the Go server) and ``rootml serve`` both accept.

Contents: ``saved_model.pb`` + ``variables/`` + ``assets/`` (a TF SavedModel whose
``serving_default`` signature takes the RAW feature vector, named ``inputs_input`` so the Go
TFaaS's hard-coded ``serving_default_inputs_input`` works), ``model.onnx`` (the same raw-input
graph, for onnxruntime), ``model.keras`` (the trained network on scaled inputs),
``params.json`` (TFaaS fields in both spellings plus the ordered ``features``), ``labels.txt``,
``layout.json`` (the layout), ``history.json``, ``provenance.json`` and ``reference.json``
(raw inputs with the expected outputs, used by ``rootml publish`` to check a server).

The scaling inside the exported graph is the preprocessing arithmetic, column by column:
``clip((raw - shift) * scale, lo, hi)`` in float32, and a NaN or inf raw value (a missing
object) becomes the padding value. Clients send physics values, not normalised ones.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .exceptions import BundleError
from .layout import LAYOUT_FILE, layout_in, load_layout
from .storage import (
    FAST_CHECKSUM,
    fast_checksum,
    file_checksums,
    read_json,
    temporary_folder,
    write_json,
)
from .transform import column_constants, scale_rows, unscale_rows

log = logging.getLogger(__name__)

INPUT_NAME = "inputs_input"  # signature input; TF names the op serving_default_inputs_input
OUTPUT_KEY = "scores"
REQUIRED = (
    "saved_model.pb",
    "variables",
    "model.keras",
    "model.onnx",
    "params.json",
    "labels.txt",
    LAYOUT_FILE,
    "provenance.json",
)
#: every file of the bundle but these two, with its size and checksums (written last, checked
#: by every load): params.json is TFaaS metadata that servers and users rewrite (name,
#: description), and the manifest does not list itself
MANIFEST = "manifest.json"
UNLISTED = ("params.json", MANIFEST)
ONNX_TOLERANCE = 1e-5
ONNX_OPSET = 17


# ------------------------------------------------------------------ export


def _serving_module(model, layout: dict):
    import tensorflow as tf

    shift, scale = column_constants(layout)
    lo, hi = (float(v) for v in layout["clip"])
    pad = float(layout["pad_value"])
    spec = tf.TensorSpec([None, layout["dim"]], tf.float32, name=INPUT_NAME)

    class Serving(tf.Module):
        def __init__(self, net):
            super().__init__(name="rootml_serving")
            self.net = net

        @tf.function(input_signature=[spec], autograph=False)
        def serve(self, raw):
            z = tf.clip_by_value((raw - tf.constant(shift)) * tf.constant(scale), lo, hi)
            z = tf.where(tf.math.is_finite(raw), z, tf.constant(pad, tf.float32))
            return {OUTPUT_KEY: self.net(z, training=False)}

    return Serving(model), spec


def export_bundle(
    model,
    layout: dict,
    out: str | Path,
    *,
    name: str,
    history: dict,
    provenance: dict,
    reference_x: np.ndarray,
    description: str = "",
) -> Path:
    """Write the bundle into a temporary directory beside ``out`` and rename it into place.

    ``reference_x`` are scaled rows (from the validation or test split): their raw
    equivalents go through the ONNX export, which must agree with Keras within 1e-5.
    """
    import tensorflow as tf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_folder(out)
    try:
        model.save(tmp / "model.keras")
        module, _ = _serving_module(model, layout)
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        export_onnx(model, layout, tmp / "model.onnx")
        reference = _check_onnx(tmp / "model.onnx", model, layout, reference_x)
        write_json(tmp / "reference.json", reference)
        write_json(tmp / LAYOUT_FILE, layout)
        write_json(tmp / "history.json", history)
        write_json(tmp / "provenance.json", provenance)
        (tmp / "labels.txt").write_text("\n".join(layout["labels"]["classes"]) + "\n")
        write_json(tmp / "params.json", tfaas_params(layout, name, description))
        write_manifest(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "bundle: %s (%d features -> %d classes)",
        out,
        layout["dim"],
        len(layout["labels"]["classes"]),
    )
    return out


def export_onnx(model, layout: dict, path: Path) -> None:
    """``model.onnx``: a hand-built preprocessing graph composed with the converted network.

    The preprocessing is written directly in ONNX because tf2onnx turns ``tf.where`` with a
    constant branch into ``cond * a + (1 - cond) * b``, where the NaN of a missing object
    leaks through ``NaN * 0``; ONNX's ``Where`` selects without arithmetic.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnx import TensorProto, helper, numpy_helper

    dim = layout["dim"]
    spec = tf.TensorSpec([None, dim], tf.float32, name="scaled")

    @tf.function(input_signature=[spec], autograph=False)
    def network(z):
        return {OUTPUT_KEY: model(z, training=False)}

    net, _ = tf2onnx.convert.from_function(network, input_signature=[spec], opset=ONNX_OPSET)
    shift, scale = column_constants(layout)
    lo, hi = (np.float32(v) for v in layout["clip"])
    consts = {
        "shift": shift,
        "scale": scale,
        "lo": np.array(lo),
        "hi": np.array(hi),
        "pad": np.array(np.float32(layout["pad_value"])),
    }
    nodes = [
        helper.make_node("IsNaN", [INPUT_NAME], ["is_nan"]),
        helper.make_node("IsInf", [INPUT_NAME], ["is_inf"]),
        helper.make_node("Or", ["is_nan", "is_inf"], ["not_finite"]),
        helper.make_node("Sub", [INPUT_NAME, "shift"], ["centred"]),
        helper.make_node("Mul", ["centred", "scale"], ["scaled_raw"]),
        helper.make_node("Clip", ["scaled_raw", "lo", "hi"], ["clipped"]),
        helper.make_node("Where", ["not_finite", "pad", "clipped"], ["scaled"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rootml_preprocessing",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, dim])],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [None, dim])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()],
    )
    pre = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    pre.ir_version = net.ir_version
    merged = onnx.compose.merge_models(pre, net, io_map=[("scaled", net.graph.input[0].name)])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(path))


def tfaas_params(layout: dict, name: str, description: str) -> dict:
    node_in, node_out = f"serving_default_{INPUT_NAME}", "StatefulPartitionedCall"
    stamp = os.environ.get("SOURCE_DATE_EPOCH")
    when = time.gmtime(int(stamp)) if stamp else time.gmtime()
    params = {
        "name": name,
        "model": "saved_model.pb",
        "labels": "labels.txt",
        "inputNode": node_in,
        "outputNode": node_out,
        "input_node": node_in,
        "output_node": node_out,
        "input_name": node_in,
        "output_name": node_out,
        "description": description or f"rootml classifier on {layout['dim']} raw features",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", when),
        "features": layout["features"],
        "classes": layout["labels"]["classes"],
        "layout_digest": layout["digest"],
    }
    new = (layout.get("derived") or {}).get("new_variables") or {}
    if new:
        # the raw vector's columns computed from branches (a named event sends the branches)
        params["derived_features"] = [f for f in layout["features"] if f.split("[", 1)[0] in new]
        params["new_variables"] = dict(new)
    weighting = _weighting(layout)
    if weighting:
        params["weighting"] = weighting
    return params


def _weighting(layout: dict) -> dict | None:
    """How the training events were weighted, from the layout: per-file normalisations, the
    per-event weight expression, the kinematic reweighting (None: unweighted)."""
    if not layout.get("weighted"):
        return None
    derived = layout.get("derived") or {}
    out: dict = {}
    files = [f.get("weight") for f in layout["files"]]
    if any(w is not None for w in files):
        out["file_weights"] = {
            f["basename"]: w for f, w in zip(layout["files"], files, strict=True)
        }
    if derived.get("weight"):
        out["event_weight"] = derived["weight"]
    reweight = derived.get("reweight")
    if reweight:
        out["reweight"] = {"variables": reweight["variables"], "target": reweight.get("target")}
    return out


def _check_onnx(path: Path, model, layout: dict, reference_x: np.ndarray) -> dict:
    import onnxruntime as ort

    x = np.asarray(reference_x[:256], dtype=np.float32)
    raw = unscale_rows(x, layout)
    expected = np.asarray(model(scale_rows(raw, layout), training=False))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: raw})[0]
    worst = float(np.max(np.abs(got - expected))) if len(x) else 0.0
    if worst > ONNX_TOLERANCE:
        raise BundleError(
            f"the ONNX export differs from the Keras model by {worst:.2e} (> {ONNX_TOLERANCE}); "
            "the model uses an operation tf2onnx does not convert faithfully: simplify it or "
            "report the layer types"
        )
    keep = min(len(x), 16)
    return {
        "inputs": [[None if not np.isfinite(v) else float(v) for v in row] for row in raw[:keep]],
        "outputs": expected[:keep].astype(float).tolist(),
        "max_onnx_difference": worst,
    }


def write_manifest(folder: Path) -> Path:
    """``manifest.json``: size, sha256 and the fast checksum of every file but :data:`UNLISTED`."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in UNLISTED:
            files[name] = {"size": path.stat().st_size, **file_checksums(path)}
    return write_json(folder / MANIFEST, {"files": files})


def verify_manifest(folder: Path) -> None:
    """Every file the manifest lists is there, with its size and fast checksum; an error names
    the first that is not."""
    where = folder / MANIFEST
    try:
        files = read_json(where)["files"]
        listed = {
            str(name): (int(rec["size"]), str(rec[FAST_CHECKSUM])) for name, rec in files.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise BundleError(
            f"unreadable bundle manifest ({err}); {_RETRAIN}\nin file {where}"
        ) from None
    for name, (size, checksum) in listed.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"bundle file {name} is missing; {_RETRAIN}\nin folder {folder}")
        if path.stat().st_size != size or fast_checksum(path) != checksum:
            raise BundleError(
                f"bundle file {name} is not the one 'rootml train' wrote (its size or checksum "
                f"differs from {MANIFEST}): it was damaged or edited; {_RETRAIN}\nin folder {folder}"
            )


def _replace_dir(new: Path, out: Path) -> None:
    """Rename ``new`` onto ``out``; an existing ``out`` is moved aside first, then removed."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        old.rmdir()
        out.rename(old)
    new.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ loading


@dataclass(frozen=True)
class Bundle:
    path: Path
    layout: dict
    params: dict

    def keras_model(self):
        import keras

        return keras.models.load_model(self.path / "model.keras", compile=False)

    def onnx_session(self, threads: int = 0):
        """An onnxruntime session of ``model.onnx``; ``threads`` 0: onnxruntime's default."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1 if threads else 0
        return ort.InferenceSession(
            str(self.path / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )


_RETRAIN = "re-run the train step that wrote it (rootml run --resume re-runs it)"


def missing_files(path: Path) -> list[str]:
    """The files of :data:`REQUIRED` a bundle folder lacks (a bundle made before 0.2 holds
    its layout as ``specs.json``)."""
    return [
        f
        for f in REQUIRED
        if not (path / f).exists() and not (f == LAYOUT_FILE and layout_in(path).exists())
    ]


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle directory; name every missing file."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} is not a directory; give the folder 'rootml train' wrote")
    missing = missing_files(path)
    if missing:
        raise BundleError(
            f"bundle is incomplete, missing {', '.join(missing)}; rerun 'rootml train'\n"
            f"in folder {path}"
        )
    if (path / MANIFEST).is_file():
        verify_manifest(path)
    else:
        log.warning("bundle %s has no %s: its files cannot be verified", path, MANIFEST)
    layout = load_layout(layout_in(path))
    params = json.loads((path / "params.json").read_text("utf-8"))
    return Bundle(path, layout, params)
