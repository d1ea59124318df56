"""Pure Arrow functions of :mod:`rootml.records`: a nested chunk becomes dotted columns,
the first chunks' columns become branches, and each chunk's columns are converted to the
branches' types (timestamps to seconds, missing lists to empty ones) and then to awkward.

No file handles here: tables in, tables or awkward arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import awkward as ak
import pyarrow as pa
import pyarrow.compute as pc

from .exceptions import BranchError, DataError, format_closest
from .reading import CATEGORY, FLAT, JAGGED, UNSUPPORTED, BranchInfo, collection_of
from .recordfiles import RawChunk

STRING_REASON = "a list of strings: give one string per record, or encode them in preprocessing"
_SECONDS = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass(frozen=True)
class Column:
    """How one branch is read: its description, the Arrow type its values are cast to, and
    the conversion (``cast``; ``time``: timestamp/date to seconds; ``iso``: ISO strings)."""

    info: BranchInfo
    arrow: pa.DataType | None = None
    convert: str = "cast"


def flatten(table: pa.Table) -> dict[str, tuple[pa.Array, str | None]]:
    """Every leaf of a nested table under its dotted name, with its collection (the list of
    records it belongs to, else the prefix of a list's name as for ROOT branches, else
    ``None``)."""
    out: dict[str, tuple[pa.Array, str | None]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        _flatten_into(name, column.combine_chunks(), None, out)
    return out


def _flatten_into(name: str, array: pa.Array, collection: str | None, out: dict) -> None:
    kind = array.type
    if pa.types.is_struct(kind):
        for field, child in zip(kind, array.flatten(), strict=True):
            _flatten_into(f"{name}.{field.name}", child, collection, out)
        return
    if _is_list(kind) and pa.types.is_struct(kind.value_type):
        values = array.values  # the list's offsets index these, slice or not
        mask = array.is_null() if array.null_count else None
        list_class = pa.LargeListArray if pa.types.is_large_list(kind) else pa.ListArray
        for field, child in zip(kind.value_type, values.flatten(), strict=True):
            leaf = list_class.from_arrays(array.offsets, child, mask=mask)
            _flatten_into(f"{name}.{field.name}", leaf, collection or name, out)
        return
    if _is_list(kind) or pa.types.is_fixed_size_list(kind):
        # a plain list is named as ROOT's branches are: Jet_pt and Jet_eta make collection Jet
        collection = collection or collection_of(name)
    out[name] = (array, collection)


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind)


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_string(kind: pa.DataType) -> bool:
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_dictionary(kind)
        or getattr(pa.types, "is_string_view", lambda _: False)(kind)
    )


def _is_time(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) or pa.types.is_date(kind)


def describe(
    flat: dict[str, tuple[pa.Array, str | None]], fields: Sequence[str] | None, path: str
) -> dict[str, Column]:
    """The branches of the first chunk (restricted to ``fields`` and their leaves)."""
    names = list(flat)
    if fields is not None:
        chosen = []
        for wanted in fields:
            leaves = [n for n in names if n == wanted or n.startswith(wanted + ".")]
            if not leaves:
                raise BranchError(
                    f"field {wanted!r} is not in the first records "
                    f"({format_closest(wanted, names)});\nfix fields=\nin file {path}"
                )
            chosen += leaves
        names = list(dict.fromkeys(chosen))
    return {name: describe_column(name, *flat[name]) for name in names}


def describe_column(name: str, array: pa.Array, collection: str | None) -> Column:
    """How one dotted column becomes a branch (pure; looks at values only for ISO strings)."""
    kind = array.type
    if _is_number(kind):
        return Column(BranchInfo(name, FLAT, _numpy_name(kind)), kind)
    if _is_time(kind):
        return Column(BranchInfo(name, FLAT, "float64"), pa.float64(), "time")
    if _is_string(kind):
        if not pa.types.is_dictionary(kind) and _all_iso(array):
            return Column(BranchInfo(name, FLAT, "float64"), pa.float64(), "iso")
        if collection is None:  # a category (rootml.categories)
            return Column(BranchInfo(name, CATEGORY, "string"), pa.string())
        why = "a string in a list of records: only one string per record is a category"
        return Column(BranchInfo(name, UNSUPPORTED, "string", reason=why))
    if pa.types.is_null(kind):
        why = "only nulls in the first records, so its type is unknown"
        return Column(BranchInfo(name, UNSUPPORTED, reason=why))
    if _is_list(kind) or pa.types.is_fixed_size_list(kind):
        return _describe_list(name, kind, collection)
    return Column(BranchInfo(name, UNSUPPORTED, reason=f"a {kind} field"))


def _describe_list(name: str, kind: pa.DataType, collection: str | None) -> Column:
    inner = kind.value_type
    fixed = kind.list_size if pa.types.is_fixed_size_list(kind) else None
    if _is_number(inner):
        info = BranchInfo(name, JAGGED, _numpy_name(inner), collection, fixed)
        return Column(info, pa.list_(inner))
    if _is_string(inner):
        return Column(BranchInfo(name, UNSUPPORTED, "string", reason=STRING_REASON))
    if pa.types.is_null(inner):
        why = "only empty lists in the first records, so its type is unknown"
        return Column(BranchInfo(name, UNSUPPORTED, reason=why))
    what = "a list of lists" if _is_list(inner) else f"a list of {inner}"
    return Column(BranchInfo(name, UNSUPPORTED, reason=what))


def _numpy_name(kind: pa.DataType) -> str:
    return "bool" if pa.types.is_boolean(kind) else str(kind.to_pandas_dtype().__name__)


def _all_iso(array: pa.Array) -> bool:
    values = array.drop_null()
    if len(values) == 0:
        return False
    try:
        _iso_seconds(values.slice(0, 1))  # most string fields fail here, at once
        _iso_seconds(values)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _iso_seconds(array: pa.Array) -> pa.Array:
    try:
        parsed = array.cast(pa.timestamp("us"))
    except pa.ArrowInvalid:
        parsed = array.cast(pa.timestamp("us", tz="UTC"))  # "Z" or "+01:00" at the end
    return _seconds(parsed)


def _seconds(array: pa.Array) -> pa.Array:
    """Timestamps or dates as float64 seconds since the epoch (naive times taken as UTC)."""
    kind = array.type
    if pa.types.is_date32(kind):
        return pc.multiply(array.cast(pa.int32()).cast(pa.float64()), 86400.0)
    unit = 1000 if pa.types.is_date64(kind) else _SECONDS[kind.unit]
    ticks = array.cast(pa.int64())
    # whole seconds and the fraction apart: nanoseconds since 1970 exceed 2**53, and
    # ns / 1e9 in float64 would give 1714564800.2499998 for 1714564800.25
    whole = pc.divide(ticks, unit)  # integer division
    fraction = pc.divide(pc.subtract(ticks, pc.multiply(whole, unit)).cast(pa.float64()), unit)
    return pc.add(whole.cast(pa.float64()), fraction)


def conform(
    flat: dict[str, tuple[pa.Array, str | None]],
    rows: int,
    schema: dict[str, Column],
    raw: RawChunk,
    path: str,
) -> tuple[pa.Table, dict[str, int], dict[str, int]]:
    """A chunk's readable columns in the first chunk's types; the counts of absent/null
    values per branch and of values in fields outside the schema."""
    columns, missing = {}, {}
    for name, column in schema.items():
        array = flat[name][0] if name in flat else _empty_leaf(flat, column)
        absent = rows if array is None else array.null_count
        if absent:
            missing[name] = absent
        if column.info.kind == UNSUPPORTED:
            continue
        if array is None:
            array = pa.nulls(rows, column.arrow)
        columns[name] = _convert(array, column, raw, path)
    parents = {c.info.collection for c in schema.values()}
    ignored = {
        name: len(array) - array.null_count
        for name, (array, _) in flat.items()
        if name not in schema and name not in parents and len(array) > array.null_count
    }
    return pa.table(columns) if columns else pa.table({}), missing, ignored


def _empty_leaf(flat: dict, column: Column) -> pa.Array | None:
    """A leaf of a list of records in a chunk where every such list was empty or null
    (pyarrow then sees a list of nulls, without the records' fields)."""
    parent = flat.get(column.info.collection or "")
    if column.info.kind != JAGGED or parent is None or not _is_list(parent[0].type):
        return None
    lists = parent[0]
    values = pa.nulls(len(lists.values), column.arrow.value_type)
    mask = lists.is_null() if lists.null_count else None
    return pa.ListArray.from_arrays(lists.offsets.cast(pa.int32()), values, mask=mask)


def _convert(array: pa.Array, column: Column, raw: RawChunk, path: str) -> pa.Array:
    try:
        if column.convert == "iso" and _is_string(array.type):
            return _iso_seconds(array)
        if column.convert in ("iso", "time") and _is_time(array.type):
            return _seconds(array)
        if array.type != column.arrow:
            array = array.cast(column.arrow)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        info = column.info
        raise DataError(
            f"field {info.name!r} is {info.dtype} ({info.kind}) in the first records, but "
            f"records {raw.first}-{raw.first + len(raw) - 1} hold {array.type}: "
            f"{str(err).splitlines()[0]};\n"
            "give the field one type in every record (write 1.0, not 1, for a float)\n"
            f"in file {path}"
        ) from err
    if _is_list(array.type) and array.null_count:  # a missing list is an empty list
        array = pa.ListArray.from_arrays(array.offsets, array.values)
    return array


def to_awkward(table: pa.Table, names: Sequence[str]) -> ak.Array:
    """``names`` of a converted table as an awkward record array; a column (or list item)
    without nulls is not an option type, as RootInput's arrays are not. A string column
    (a category) becomes an awkward categorical array: its distinct values once, and
    indices, which :mod:`rootml.categories` counts and encodes without copying strings."""
    import pyarrow.compute as pc

    fields, arrays = [], []
    for name in names:
        array = table.column(name).combine_chunks()
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            array = pc.dictionary_encode(array)
        if _is_list(array.type) and array.values.null_count == 0:
            array = array.cast(pa.list_(pa.field("item", array.type.value_type, False)))
        fields.append(pa.field(name, array.type, nullable=array.null_count > 0))
        arrays.append(array)
    return ak.from_arrow(pa.Table.from_arrays(arrays, schema=pa.schema(fields)))
