"""Record files (JSON lines, CSV, Parquet, Avro) behind the interface of :class:`RootInput`.

:func:`open_records` gives a :class:`RecordInput` with the same ``source``/``path``,
``format``, ``entries``, ``branches``, ``require``, ``arrays``, ``iterate`` and ``close`` as
:class:`rootml.reading.RootInput`, so the stages above can read either.

Fields are named by their path: ``{"data": {"bytes": 1}}`` gives the branch ``data.bytes``. A
list of numbers is a jagged branch; a list of records ``muons: [{pt, eta}, ...]`` gives the
jagged branches ``muons.pt`` and ``muons.eta`` of the collection ``muons``, as a ROOT
collection does. Timestamps (pyarrow timestamp and date types, and strings that all parse as
ISO 8601 in the first chunk) become float64 seconds since the epoch; other strings are
categories (kind ``category``, :mod:`rootml.categories`: a vocabulary fixed at merge encodes
them), except strings inside lists, kept in :attr:`RecordInput.branches` as unsupported.

The types of the fields are those of the first chunk (``block_size`` bytes of text, or
``batch_rows`` records): a field first seen later is not a branch (it is counted in
:attr:`RecordInput.ignored`), and a later value of another type is a :class:`DataError`.

MLaaS4HEP's per-record hook ``preprocessing(rec)`` (a dict in, a flat dict or ``None`` out)
and a vectorised ``preprocess_chunk(table)`` (a ``pyarrow.Table`` in, a table or an awkward
record array out) are loaded from a user's file by :func:`load_preprocessing`.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import awkward as ak
import pyarrow as pa

from .exceptions import ConfigError, DataError
from .hooks import CHUNK_HOOK, RECORD_HOOK, hook_document, load_hook
from .reading import UNSUPPORTED, grown_step, require_names
from .recordarrays import Column, conform, describe, flatten, to_awkward
from .recordfiles import (
    BAD_LINE_POLICIES,
    RawChunk,
    ReadOptions,
    avro_rows,
    detect_format,
    parquet_rows,
    read_chunks,
    source_of,
)
from .sources import Source

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

#: records whose types, promoted together, make the branches' types
SAMPLE_ROWS = 1000


class RecordInput:
    """One opened record file. Use :func:`open_records` to get one.

    ``skipped_lines`` counts malformed lines skipped under ``on_bad_line="skip"``;
    ``missing`` counts, per branch, the records in which it was absent or null (filled with
    null; a missing list is an empty list); ``ignored`` counts values of fields first seen
    after the first chunk. All three count each chunk once, as it is read: they are complete
    after one full pass (``entries`` of a JSON or CSV file makes one).
    """

    tree_name = None  # record files have no trees

    def __init__(
        self,
        source: Source,
        format: str,
        compression: str | None,
        options: ReadOptions,
        hook: tuple[str, Callable] | None,
        fields: Sequence[str] | None,
    ):
        self.source = source
        self.format = format
        self.compression = compression
        self.skipped_lines = 0
        self.missing: dict[str, int] = {}
        self.ignored: dict[str, int] = {}
        self._options = options
        self._hook = hook
        self._fields = list(fields) if fields is not None else None
        self._schema: dict[str, Column] | None = None
        self._keys: tuple[int, frozenset] | None = None  # the first record's hook keys
        self._counted: set[tuple] = set()
        self._entries: int | None = None
        self._stream: Iterator[tuple[int, pa.Table]] | None = None
        self._pos, self._pending = 0, None
        self._restart(0)
        self._pos, self._pending = next(self._stream, (0, None))
        if self._schema is None or self._pending is None:  # no records at all
            self._schema, self._entries = self._schema or {}, 0
        self.branches = {name: column.info for name, column in self._schema.items()}

    @property
    def path(self) -> str:
        return self.source.url

    @property
    def entries(self) -> int:
        """The number of records (after the preprocessing hook, if any). Parquet and Avro
        without a hook: from the footer or the block headers; otherwise one full read of the
        file, the first time it is asked for (or free, once a read has reached the end)."""
        if self._entries is None:
            if self._hook is None and self.format == "parquet":
                self._entries = parquet_rows(self.source, self._options)
            elif self._hook is None and self.format == "avro":
                self._entries = avro_rows(self.source, self._options)
            else:
                self._entries = sum(table.num_rows for _, table in self._chunks(0))
        return self._entries

    @property
    def known_entries(self) -> int | None:
        """:attr:`entries` when it costs no read of the file (a footer, a finished read),
        else None: a progress bar does not read the file twice to know its length."""
        if self._entries is None and self._hook is None and self.format in ("parquet", "avro"):
            return self.entries
        return self._entries

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def require(self, names: Sequence[str]) -> None:
        """Raise :class:`BranchError` unless every name is a readable field here."""
        require_names(self.branches, names, "field", f"the {self.format} records", self.path)

    def arrays(self, names: Sequence[str], start: int = 0, stop: int | None = None) -> ak.Array:
        """Records [start, stop) of ``names`` as one record array with those fields."""
        self.require(names)
        return to_awkward(self._rows(start, stop), names)

    def iterate(
        self,
        names: Sequence[str],
        step: int,
        start: int = 0,
        stop: int | None = None,
        *,
        target_bytes: int | None = None,
    ) -> Iterator[tuple[int, ak.Array]]:
        """Yield ``(first_entry, arrays)`` in steps of ``step`` records (bounded memory), to
        ``stop`` or the end of the file; ``target_bytes`` grows the steps as
        :meth:`RootInput.iterate` does."""
        self.require(names)
        lo, size = start, max(step, 1)
        while stop is None or lo < stop:
            hi = lo + size if stop is None else min(lo + size, stop)
            arrays = self.arrays(names, lo, hi)
            if len(arrays) == 0:
                return
            yield lo, arrays
            if target_bytes:
                size = grown_step(size, arrays, target_bytes)
            if len(arrays) < hi - lo:
                return
            lo += len(arrays)

    # -----------------------------------------------------------------------------------------
    # reading: a cursor over the stream of converted chunks, restarted to go backwards

    def _restart(self, start: int) -> None:
        self.close()
        skip = self.format == "parquet" and self._hook is None
        self._stream = self._chunks(start if skip else 0)
        self._pos, self._pending = 0, None

    def _rows(self, start: int, stop: int | None) -> pa.Table:
        """The converted columns of records [start, stop) (``stop=None``: to the end)."""
        if self._stream is None or start < self._pos:
            self._restart(start)
        parts = []
        while stop is None or self._pos < stop:
            if self._pending is None:
                item = next(self._stream, None)
                if item is None:
                    self._entries = self._pos
                    break
                self._pos, self._pending = item
            rows = self._pending.num_rows
            if self._pos + rows > start:
                lo = max(start - self._pos, 0)
                hi = rows if stop is None else min(stop - self._pos, rows)
                parts.append(self._pending.slice(lo, hi - lo))
                if hi < rows:
                    break  # the rest of this chunk starts the next call
            self._pos, self._pending = self._pos + rows, None
        if not parts:
            return self._empty()
        return pa.concat_tables(parts)

    def _empty(self) -> pa.Table:
        readable = {n: c for n, c in (self._schema or {}).items() if c.info.kind != UNSUPPORTED}
        return pa.schema([(n, c.arrow) for n, c in readable.items()]).empty_table()

    def _chunks(self, start: int) -> Iterator[tuple[int, pa.Table]]:
        """``(first record, converted table)`` per chunk from the one holding ``start``.

        Until the branches are known, chunks are held back until they hold ``SAMPLE_ROWS``
        records (or the file ends): their types, promoted together, are the branches'."""
        raw_chunks = read_chunks(self.source, self.format, self.compression, self._options, start)
        done = 0  # records handed out so far, when a hook changes the numbering
        held: list[tuple[RawChunk, pa.Table]] = []
        try:
            for raw in raw_chunks:
                nested = self._apply_hook(raw)
                if self._schema is None:
                    held.append((raw, nested))
                    if sum(t.num_rows for _, t in held) < SAMPLE_ROWS:
                        continue
                    self._schema = self._describe(held)
                for raw_chunk, table in held or [(raw, nested)]:
                    converted = self._convert(raw_chunk, table)
                    yield (done if self._hook else raw_chunk.first), converted
                    done += converted.num_rows
                held = []
            if held and self._schema is None:
                self._schema = self._describe(held)
                for raw_chunk, table in held:
                    converted = self._convert(raw_chunk, table)
                    yield (done if self._hook else raw_chunk.first), converted
                    done += converted.num_rows
        finally:
            raw_chunks.close()

    def _describe(self, held: list[tuple[RawChunk, pa.Table]]) -> dict[str, Column]:
        tables = [t for _, t in held if t.num_rows]
        if not tables:
            return {}
        sample = pa.concat_tables(tables, promote_options="permissive")
        return describe(flatten(sample), self._fields, self.path)

    def _convert(self, raw: RawChunk, nested: pa.Table) -> pa.Table:
        flat = flatten(nested)
        rows = nested.num_rows
        table, missing, ignored = conform(flat, rows, self._schema, raw, self.path)
        self._count(raw, missing, ignored)
        return table

    def _count(self, raw: RawChunk, missing: dict, ignored: dict) -> None:
        if raw.key in self._counted:
            return
        self._counted.add(raw.key)
        self.skipped_lines += raw.skipped
        for total, counts in ((self.missing, missing), (self.ignored, ignored)):
            for name, n in counts.items():
                total[name] = total.get(name, 0) + n

    def _apply_hook(self, raw: RawChunk) -> pa.Table:
        if self._hook is None:
            return raw.table if raw.table is not None else pa.Table.from_pylist(raw.records)
        kind, function = self._hook
        if kind == CHUNK_HOOK:
            return _per_chunk(function, raw, self.path)
        return self._per_record(function, raw)

    def _per_record(self, function: Callable, raw: RawChunk) -> pa.Table:
        """MLaaS4HEP's ``preprocessing(rec)``: one call per record, in a Python loop."""
        records = raw.records if raw.records is not None else raw.table.to_pylist()
        out = []
        for number, record in enumerate(records, start=raw.first):
            try:
                result = function(record)
            except Exception as err:
                raise _hook_error(RECORD_HOOK, f"record {number}", err, self.path) from err
            if result is None:
                continue
            if not isinstance(result, dict):
                raise DataError(
                    f"preprocessing(rec) returned a {type(result).__name__} for record "
                    f"{number} (records count from 0);\n"
                    f"return a dict of field -> value, or None to drop the record\n"
                    f"in file {self.path}"
                )
            if self._keys is None:
                self._keys = (number, frozenset(result))
            elif result.keys() != self._keys[1]:
                raise _keys_error(self._keys, number, set(result), self.path)
            out.append(result)
        try:
            return pa.Table.from_pylist(out)
        except (pa.ArrowException, TypeError, ValueError) as err:
            raise DataError(
                f"the dicts preprocessing(rec) returned for records {raw.first}-"
                f"{raw.first + len(records) - 1} do not make a table: {err};\n"
                "return numbers, lists of numbers or strings, of one type per key\n"
                f"in file {self.path}"
            ) from err


def _per_chunk(function: Callable, raw: RawChunk, path: str) -> pa.Table:
    table = raw.table if raw.table is not None else pa.Table.from_pylist(raw.records)
    where = f"records {raw.first}-{raw.first + len(raw) - 1}"
    try:
        result = function(table)
    except Exception as err:
        raise _hook_error(CHUNK_HOOK, where, err, path) from err
    if isinstance(result, ak.Array):
        return ak.to_arrow_table(result, extensionarray=False)
    if isinstance(result, pa.RecordBatch):
        return pa.Table.from_batches([result])
    if not isinstance(result, pa.Table):
        raise DataError(
            f"preprocess_chunk(chunk) returned a {type(result).__name__} for {where};\n"
            "return a pyarrow.Table or an awkward record array\n"
            f"in file {path}"
        )
    return result


def _hook_error(kind: str, where: str, err: BaseException, path: str) -> DataError:
    last = traceback.format_exception_only(type(err), err)[-1].strip()
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return DataError(
        f"{kind} raised at {where} (records count from 0): {last}\n"
        f"(at {Path(frame.filename).name} line {frame.lineno});\n"
        f"fix {kind} for such records, or return None to drop them\n"
        f"in file {path}"
    )


def _keys_error(first: tuple[int, frozenset], number: int, keys: set, path: str):
    ref_number, ref = first
    lacks, extra = sorted(ref - keys), sorted(keys - ref)
    parts = [f"lacks {lacks}" if lacks else "", f"adds {extra}" if extra else ""]
    return DataError(
        f"preprocessing(rec) returned different keys for record {number} than for record "
        f"{ref_number}: record {number} {' and '.join(p for p in parts if p)};\n"
        "return the same keys for every record (None for a missing value)\n"
        f"in file {path}"
    )


# ---------------------------------------------------------------------------------------------
# opening


def open_records(
    source: Source | str | Path,
    *,
    format: str | None = None,
    fields: Sequence[str] | None = None,
    preprocessing: Callable | None = None,
    preprocess_chunk: Callable | None = None,
    on_bad_line: str = "error",
    workers: int = 1,
    timeout: float = 30.0,
    block_size: int = 4 << 20,
    batch_rows: int = 65536,
) -> RecordInput:
    """Open a JSON lines, CSV, Parquet or Avro file; fail early with a message naming it.

    ``format`` (MLaaS4HEP's ``--dtype``) overrides the file name's ending. ``fields`` keeps
    only those dotted names (a prefix keeps all its leaves). ``preprocessing(rec)`` is called
    once per record with the record as parsed (nested dicts intact) and returns a flat dict,
    or ``None`` to drop the record; a function named ``preprocess_chunk`` (or one given as
    ``preprocess_chunk=``) is called once per chunk with a ``pyarrow.Table`` instead. With
    either, the branches are the hook's output and ``entries`` costs one full pass.
    ``on_bad_line``: ``"error"`` raises at a malformed line, ``"skip"`` skips and counts it.
    ``workers`` > 1 lets pyarrow parse on several threads. Memory is bounded by
    ``block_size`` bytes of text or ``batch_rows`` records per chunk (a Parquet row group).
    """
    src = source_of(source)
    fmt, compression = detect_format(src, format)
    if on_bad_line not in BAD_LINE_POLICIES:
        raise ConfigError(
            f"on_bad_line is {on_bad_line!r}; use one of {', '.join(BAD_LINE_POLICIES)}"
        )
    hook = _hook_of(preprocessing, preprocess_chunk)
    options = ReadOptions(
        timeout=timeout,
        block_size=block_size,
        batch_rows=batch_rows,
        workers=workers,
        on_bad_line=on_bad_line,
        as_records=hook is not None and hook[0] == RECORD_HOOK and fmt in ("json", "avro"),
    )
    opened = RecordInput(src, fmt, compression, options, hook, fields)
    log.debug(
        "opened %s (%s%s): %d fields",
        src.url,
        fmt,
        f", {compression}" if compression else "",
        len(opened.branches),
    )
    return opened


def _hook_of(preprocessing: Callable | None, preprocess_chunk: Callable | None):
    if preprocessing is not None and preprocess_chunk is not None:
        raise ConfigError("give preprocessing or preprocess_chunk, not both")
    if preprocess_chunk is not None:
        return (CHUNK_HOOK, preprocess_chunk)
    if preprocessing is None:
        return None
    if getattr(preprocessing, "__name__", "") == CHUNK_HOOK:
        return (CHUNK_HOOK, preprocessing)
    return (RECORD_HOOK, preprocessing)


def load_preprocessing(path: str | Path) -> Callable:
    """The ``preprocessing(rec)`` or ``preprocess_chunk(chunk)`` function of a user's file
    (run as a script, as MLaaS4HEP imports its ``--preproc`` file)."""
    return load_hook(hook_document(path), str(path))
