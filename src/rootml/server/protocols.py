"""The serving protocols' shapes: TFaaS, KServe V2 and TF Serving bodies turned into float32
rows, and a model's outputs into their replies.

Pure functions over parsed JSON (dicts and lists) and NumPy arrays; no I/O. Every client
mistake raises :class:`~rootml.exceptions.RequestError` (400) saying which field was wrong,
what it held and what was expected. Raw physics values come in; ``null`` or the ``NaN`` token
(which tritonclient writes for FP32 data and TF Serving's REST API accepts for float tensors,
with ``Infinity`` and ``-Infinity``) marks a missing object and becomes NaN, which the model's
graph turns into padding.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import numpy as np

from ..exceptions import DataError, RequestError
from .backends import LoadedModel

try:  # orjson is in the ``serve`` extra; the standard library is the fallback
    import orjson

    _DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

    def loads(body: bytes | memoryview) -> Any:
        """Parse a JSON body; a 400 saying where it is broken otherwise. orjson refuses the
        ``NaN``/``Infinity`` tokens: a body that holds them is parsed by the standard library."""
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as err:
            if _NON_FINITE.search(bytes(body)):
                return _loads_non_finite(body)
            raise RequestError(400, f"the body is not valid JSON: {err}") from None

    def dumps(doc: Any) -> bytes:
        return orjson.dumps(doc, option=_DUMP_OPTIONS)

except ImportError:  # pragma: no cover - exercised only without orjson

    def loads(body: bytes | memoryview) -> Any:
        return _loads_non_finite(body)

    def dumps(doc: Any) -> bytes:
        return json.dumps(doc, default=_plain, allow_nan=False).encode()

    def _plain(value: Any) -> Any:
        if isinstance(value, np.ndarray | np.generic):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_NON_FINITE = re.compile(rb"NaN|Infinity")


def _loads_non_finite(body: bytes | memoryview) -> Any:
    """The standard library's parser, which reads ``NaN``, ``Infinity`` and ``-Infinity``."""
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as err:
        raise RequestError(400, f"the body is not valid JSON: {err}") from None


_NUMBER_TYPES = (int, float, bool)
V2_TYPES = {
    "FP32": "<f4",
    "FP64": "<f8",
    "FP16": "<f2",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "BOOL": "|b1",
}


def object_of(doc: Any, what: str = "the body") -> dict:
    if not isinstance(doc, dict):
        raise RequestError(400, f"{what} must be a JSON object, got {type(doc).__name__}")
    return doc


def rows(
    values: Any, what: str = "values", *, allow_single: bool = True
) -> tuple[np.ndarray, bool]:
    """A float32 ``[n, f]`` array from one row (a list of numbers) or a list of rows, and
    whether it was one row. ``null`` becomes NaN."""
    if not isinstance(values, list) or not values:
        raise RequestError(
            400,
            f"'{what}' must be a non-empty list of numbers (one row) or of equally long rows",
        )
    single = not isinstance(values[0], list)
    if single and not allow_single:
        raise RequestError(400, f"'{what}' must be a list of rows (lists of numbers)")
    try:
        array = np.array(values)
        if array.dtype.kind == "O":
            if not all(v is None or type(v) in _NUMBER_TYPES for v in array.flat):
                raise TypeError
            array = np.array(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError, RecursionError):
        array = None
    if array is None or array.dtype.kind not in "fiub" or array.ndim != (1 if single else 2):
        raise RequestError(
            400,
            f"'{what}' must hold numbers or null only, as one row or as equally long rows",
        )
    with np.errstate(over="ignore", invalid="ignore"):
        x = array.astype(np.float32)
    if np.isinf(x).any():
        raise RequestError(
            400,
            f"'{what}' holds a value outside the float32 range; send physics values "
            "(null for a missing object)",
        )
    return (x[None, :] if single else x), single


def check_width(x: np.ndarray, model: LoadedModel, what: str = "values") -> None:
    if x.shape[1] != model.dim:
        raise RequestError(
            400,
            f"model {model.name!r} takes {model.dim} features per row, '{what}' has "
            f"{x.shape[1]}; GET /params/{model.name} lists them under 'features'",
        )


def event_rows(
    events: Any, model: LoadedModel, single: bool, absent_ok: bool = False
) -> np.ndarray:
    """Raw rows from named events (branch name -> value or list), through the bundle's specs;
    with ``absent_ok`` (records, whose fields may be absent) an absent branch is padded."""
    from ..transform import events_to_raw

    if model.layout is None:
        raise RequestError(
            400, f"model {model.name!r} has no layout.json, so it takes 'values', not events"
        )
    what = "event" if single else "events"
    if single:
        events = [object_of(events, "'event'")]
    elif not isinstance(events, list) or not events:
        raise RequestError(400, "'events' must be a non-empty list of objects")
    try:
        return events_to_raw(events, model.layout, absent_ok=absent_ok)
    except DataError:
        raise
    except (ValueError, TypeError, OverflowError) as err:
        raise RequestError(400, f"'{what}' cannot be read as branch values: {err}") from None


def _dotted(record: Any, prefix: str, out: dict) -> None:
    """``record``'s leaves under their dotted names, as the record readers name fields; a list
    of objects is a collection: ``{"jets": [{"pt": 1}, {"pt": 2}]}`` gives ``jets.pt: [1, 2]``
    (an object without a leaf has None there: ``[{"pt": 1}, {"pt": 2, "eta": 0.5}]`` gives
    ``jets.eta: [None, 0.5]``, so the values stay with their objects)."""
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _dotted(value, f"{name}.", out)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            items = []
            for item in value:
                flat: dict = {}
                _dotted(item, "", flat)
                items.append(flat)
            for leaf in dict.fromkeys(leaf for flat in items for leaf in flat):
                out[f"{name}.{leaf}"] = [flat.get(leaf) for flat in items]
        else:
            out[name] = value


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _iso_seconds(value: Any) -> Any:
    """An ISO 8601 string as the record readers turn it into a number (float seconds since the
    epoch, a naive time taken as UTC, whole seconds and the fraction added as they add them);
    anything else as it is (the event check names what is not a number)."""
    if not isinstance(value, str):
        return value
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    delta = moment - _EPOCH
    return float(delta.days * 86400 + delta.seconds) + delta.microseconds / 1e6


def record_rows(records: Any, model: LoadedModel, single: bool) -> np.ndarray:
    """Raw rows from records as the model's record files held them (nested objects, the
    fields it was not trained on ignored), through :func:`event_rows`."""
    from ..transform import event_branches

    what = "'record'" if single else "'records'"
    if model.layout is None:
        raise RequestError(
            400, f"model {model.name!r} has no layout.json, so it takes 'values', not records"
        )
    if model.layout.get("preprocessing") and model.hook is None:
        raise RequestError(
            400,
            f"model {model.name!r} was trained through a preprocessing(rec) hook, which this "
            "server does not run (uploaded code is not executed unless the server was started "
            "with --run-bundle-hooks, for bundles its operator trusts): apply it on your side "
            "and send its output fields as 'event'/'events'",
        )
    items = [records] if single else records
    if not isinstance(items, list) or not items or not all(isinstance(r, dict) for r in items):
        raise RequestError(400, f"{what} must be an object (or a non-empty list of them)")
    if model.hook is not None:
        return event_rows(_hooked(items, model), model, False)
    wanted = set(event_branches(model.layout)[0])
    # a string field's value is a category, not a time
    strings = {c["branch"] for c in model.layout["inputs"] if c["kind"] == "category"}
    events = []
    for i, record in enumerate(items):
        flat: dict = {}
        _dotted(record, "", flat)
        if not wanted & set(flat):  # a field may be missing, as in the files; not all of them
            raise RequestError(
                400,
                f"record {i} holds none of the fields model {model.name!r} reads "
                f"({', '.join(sorted(wanted)[:8])}{', ...' if len(wanted) > 8 else ''}); "
                "send the records as its files held them",
            )
        # an absent field (a string one included: 'other') is missing, as in the files
        events.append(
            {k: v if k in strings else _iso_seconds(v) for k, v in flat.items() if k in wanted}
        )
    return event_rows(events, model, False, absent_ok=True)


def _hooked(records: list[dict], model: LoadedModel) -> list[dict]:
    """The events the model's own preprocessing hook makes of ``records`` (as preprocess
    made them of the files' records); a record it drops or fails on is the client's 400."""
    import traceback

    from ..hooks import CHUNK_HOOK
    from ..transform import event_branches

    kind, function = model.hook
    wanted = set(event_branches(model.layout)[0])
    try:
        if kind == CHUNK_HOOK:
            import awkward as ak
            import pyarrow as pa

            result = function(pa.Table.from_pylist(records))
            out = ak.to_list(result) if isinstance(result, ak.Array) else result.to_pylist()
            if len(out) != len(records):
                raise RequestError(
                    400,
                    f"preprocess_chunk kept {len(out)} of the {len(records)} records sent: "
                    "send only records the model scores",
                )
        else:
            out = [function(record) for record in records]
    except RequestError:
        raise
    except Exception as err:  # noqa: BLE001  the bundle's code may raise anything
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        raise RequestError(
            400, f"the model's preprocessing raised {last} on the records sent"
        ) from None
    for i, event in enumerate(out):
        if event is None:
            raise RequestError(
                400, f"preprocessing(rec) drops record {i}: the model does not score such records"
            )
        if not isinstance(event, dict):
            raise RequestError(
                400, f"preprocessing(rec) returned a {type(event).__name__} for record {i}"
            )
    return [{k: v for k, v in event.items() if k in wanted} for event in out]


def tfaas_rows(doc: dict, model: LoadedModel) -> tuple[np.ndarray, bool]:
    """Rows of a ``/json`` body: ``values`` (+ optional ``keys``), ``event``/``events`` (by
    branch name) or ``record``/``records`` (nested records, as a record file holds them)."""
    if "record" in doc:
        return record_rows(doc["record"], model, True), True
    if "records" in doc:
        return record_rows(doc["records"], model, False), False
    if "event" in doc:
        return event_rows(doc["event"], model, True), True
    if "events" in doc:
        return event_rows(doc["events"], model, False), False
    if "values" not in doc:
        raise RequestError(
            400,
            "the body needs 'values' (with optional 'keys'), 'event'/'events' or "
            "'record'/'records'",
        )
    x, single = rows(doc["values"])
    order = model.order(doc.get("keys"))
    check_width(x, model)
    return (x if order is None else x[:, order]), single


# ------------------------------------------------------------------ KServe V2


def _v2_params(item: dict, what: str) -> dict:
    params = item.get("parameters", {})
    if not isinstance(params, dict):
        raise RequestError(400, f"{what} 'parameters' must be an object")
    return params


def v2_rows(doc: dict, model: LoadedModel, tail: bytes | memoryview) -> np.ndarray:
    """The one input tensor of a V2 infer request, JSON ``data`` or binary (after the JSON)."""
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(
            400, f"'inputs' must be a list of one tensor, {model.input_name!r} [N, {model.dim}]"
        )
    item = inputs[0]
    if item.get("name") != model.input_name:
        raise RequestError(
            400,
            f"input {str(item.get('name'))[:64]!r} is unknown: model {model.name!r} takes "
            f"{model.input_name!r}",
        )
    datatype = item.get("datatype")
    if not isinstance(datatype, str) or datatype not in V2_TYPES:
        raise RequestError(
            400, f"datatype {str(datatype)[:16]!r} is not numeric; send FP32 (or FP64, INTn)"
        )
    shape = item.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(s) is int and s >= 0 for s in shape)
        or shape[1] != model.dim
        or shape[0] == 0
    ):
        raise RequestError(
            400, f"shape must be [N, {model.dim}] with N >= 1, got {str(shape)[:64]}"
        )
    count = shape[0] * shape[1]
    params = _v2_params(item, "input")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        dtype = np.dtype(V2_TYPES[datatype])
        if type(size) is not int or size != count * dtype.itemsize or size > len(tail):
            raise RequestError(
                400,
                f"binary_data_size must be {count * dtype.itemsize} bytes for shape {shape} "
                f"{datatype}, with that many bytes after the JSON header ({len(tail)} sent)",
            )
        x = np.frombuffer(tail, dtype=dtype, count=count).reshape(shape)
        return x if x.dtype == np.float32 else x.astype(np.float32)
    data = item.get("data")
    if not isinstance(data, list) or not data:
        raise RequestError(400, "the input needs 'data' (flat or nested) or binary_data_size")
    x, _ = rows(data if isinstance(data[0], list) else [data], "data")
    if x.size != count:
        raise RequestError(400, f"'data' holds {x.size} values but shape {shape} needs {count}")
    return x.reshape(shape)


def v2_binary_output(doc: dict, model: LoadedModel) -> bool:
    """Whether the output goes back as binary data (the binary tensor data extension)."""
    binary = _v2_params(doc, "request").get("binary_data_output", False) is True
    outputs = doc.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise RequestError(400, "'outputs' must be a list of objects with a 'name'")
    for out in outputs:
        if out.get("name") != model.output_name:
            raise RequestError(
                400,
                f"output {str(out.get('name'))[:64]!r} is unknown: model {model.name!r} gives "
                f"{model.output_name!r}",
            )
        binary = _v2_params(out, "output").get("binary_data", binary) is True
    return binary


def v2_reply(doc: dict, model: LoadedModel, out: np.ndarray, binary: bool) -> tuple[dict, bytes]:
    """The V2 response object, and the binary tail (empty unless ``binary``)."""
    out = np.ascontiguousarray(out, dtype=np.float32)
    tensor: dict[str, Any] = {
        "name": model.output_name,
        "datatype": "FP32",
        "shape": list(out.shape),
    }
    tail = b""
    if binary:
        tail = out.astype("<f4", copy=False).tobytes()
        tensor["parameters"] = {"binary_data_size": len(tail)}
    else:
        tensor["data"] = out.reshape(-1)
    reply: dict[str, Any] = {"model_name": model.name, "model_version": "1", "outputs": [tensor]}
    if "id" in doc:
        if not isinstance(doc["id"], str):
            raise RequestError(400, "'id' must be a string")
        reply["id"] = doc["id"]
    return reply, tail


#: TF Serving version labels: this server's one version answers to these
LABELS = ("stable", "latest")


def check_version(version: str, label: str | None = None) -> None:
    """404 unless ``version`` is this server's one version "1" (and ``label`` one of
    :data:`LABELS`), for the HTTP routes and gRPC alike."""
    if version != "1":
        raise RequestError(
            404, f"version {version[:32]!r} not found: this server keeps one version, '1'"
        )
    if label is not None and label not in LABELS:
        raise RequestError(
            404,
            f"version label {label[:32]!r} not found: this server's one version '1' has the "
            f"labels {' and '.join(LABELS)}",
        )


# ------------------------------------------------------------------ TF Serving REST


def tfserving_rows(doc: dict, model: LoadedModel) -> tuple[np.ndarray, str]:
    """Rows of a ``:predict`` body and the reply key (``predictions`` or ``outputs``)."""
    signature = doc.get("signature_name", "serving_default")
    if signature not in ("serving_default", ""):  # "" is the default, as the metadata says
        raise RequestError(400, f"signature {str(signature)[:64]!r} unknown: use serving_default")
    if ("instances" in doc) == ("inputs" in doc):
        raise RequestError(400, "send either 'instances' (row format) or 'inputs' (columnar)")
    key = "predictions" if "instances" in doc else "outputs"
    value = doc.get("instances", doc.get("inputs"))
    if isinstance(value, dict):
        if set(value) != {model.input_name}:
            raise RequestError(400, f"'inputs' must name the one input {model.input_name!r}")
        value = value[model.input_name]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        if all(set(v) == {model.input_name} for v in value):
            value = [v[model.input_name] for v in value]
        else:  # TF Serving's named-feature row format: branch name -> value per instance
            return event_rows(value, model, False), key
    x, _ = rows(value, "instances" if key == "predictions" else "inputs", allow_single=False)
    check_width(x, model, key)
    return x, key
