"""The byte end of :mod:`rootml.records`: where a record file lives, its format, and its chunks.

Every format is read by a library, in chunks whose memory is bounded by the chunk size, not
by the file: JSON lines in blocks of whole lines parsed by ``pyarrow.json.read_json``
(``pyarrow.json.open_json`` streams only on recent pyarrow, and neither reports line numbers);
CSV by ``pyarrow.csv.open_csv``; Parquet by ``ParquetFile.iter_batches`` (row groups); Avro
by ``fastavro.block_reader``. gzip goes through ISA-L's ``isal.igzip`` when it is installed
(the ``records`` extra; 3-4x faster than zlib), else, as bz2 does, through pyarrow's
compressed input streams.

A reader's :meth:`chunks` yields :class:`RawChunk` s from the start of the file (Parquet can
start at a row group). Files live on the local disk, behind ``http(s)://`` (the standard
library: a stream for the text formats and Avro, byte ranges for Parquet) or behind any
``fsspec`` protocol (``s3://``, ``hdfs://``, ``webhdfs://``), whose packages are optional.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from os import PathLike, fspath
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from .exceptions import ConfigError, DataError, InputFileError
from .sources import COMPRESSIONS, RECORD_FORMATS, Source, resolve

#: format -> file name endings (before an optional .gz/.bz2)
FORMATS = RECORD_FORMATS
#: URL schemes opened through fsspec, and what a user installs for each
FSSPEC_SCHEMES = {
    "s3": "pip install s3fs",
    "gs": "pip install gcsfs",
    "webhdfs": "pip install requests (fsspec's WebHDFS client needs it)",
    "hdfs": "pyarrow's HadoopFileSystem needs libhdfs: install Hadoop and set HADOOP_HOME, "
    "ARROW_LIBHDFS_DIR and CLASSPATH (`hadoop classpath --glob`), or read through webhdfs://",
}
BAD_LINE_POLICIES = ("error", "skip")
try:  # decompresses gzip 3-4x faster than zlib (benchmarks/bench_records.py's first rows)
    from isal import igzip as _igzip
    from isal.isal_zlib import IsalError as _IsalError
except ImportError:  # pragma: no cover  # the records extra installs it
    _igzip, _IsalError = None, OSError
# what pyarrow and the codecs raise for bytes that are not what they should be
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError, _IsalError)


def source_of(source: Source | str | PathLike) -> Source:
    """A :class:`Source` for a local path, ``http(s)://`` URL or an fsspec URL."""
    if isinstance(source, Source):
        return source
    source = fspath(source)
    scheme = urlparse(source).scheme.lower()
    if scheme in FSSPEC_SCHEMES:
        return Source(source, source, scheme)
    return resolve(source)


#: the first bytes of a gzip and a bzip2 stream
MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2"}


def _sniffed_compression(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(3)
    except OSError:
        return None  # opening it says what is wrong
    return next((codec for magic, codec in MAGIC.items() if head.startswith(magic)), None)


def detect_format(src: Source, format: str | None) -> tuple[str, str | None]:
    """``(format, compression)`` of a file, from ``format`` or else from its name."""
    name = src.basename.lower()
    compression = None
    stem = name
    for suffix, codec in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, stem = codec, name[: -len(suffix)]
    if format is not None:
        if format not in FORMATS:
            raise ConfigError(
                f"unknown record format {format!r} (known: {', '.join(FORMATS)});\n"
                f"set format (MLaaS4HEP's --dtype) to one of them\nin file {src.url}"
            )
        found = format
    else:
        found = next((f for f, ends in FORMATS.items() if stem.endswith(ends)), None)
        if found is None:
            known = ", ".join(e for ends in FORMATS.values() for e in ends)
            raise InputFileError(
                f"cannot tell the record format from the name {src.basename!r} "
                f"(known endings: {known}, with .gz or .bz2 for JSON and CSV);\n"
                f"rename the file or give format= one of {', '.join(FORMATS)}\nin file {src.url}"
            )
    if compression is None and found in ("json", "csv") and not src.remote:
        compression = _sniffed_compression(src.url)  # a name without .gz may hide gzip
    if compression and found in ("parquet", "avro"):
        raise InputFileError(
            f"a {found} file compresses its own blocks; {compression} around it is not read;\n"
            f"decompress it first\nin file {src.url}"
        )
    return found, compression


# ---------------------------------------------------------------------------------------------
# opening bytes


def open_bytes(src: Source, *, timeout: float, seekable: bool = False):
    """A binary file object for ``src``: a stream, or with ``seekable`` one that seeks."""
    if src.scheme == "file":
        try:
            return open(src.url, "rb")
        except OSError as err:
            raise InputFileError(f"cannot open: {err.strerror}\nin file {src.url}") from err
    if src.scheme in ("http", "https"):
        if seekable:
            return io.BufferedReader(_HTTPRangeFile(src.url, timeout), buffer_size=1 << 20)
        return _urlopen(src.url, timeout)
    if src.scheme in FSSPEC_SCHEMES:
        return _fsspec_open(src)
    raise InputFileError(
        f"records cannot be read over {src.scheme}://;\n"
        f"use a local path, https://, s3://, hdfs:// or webhdfs://\nin file {src.url}"
    )


def _urlopen(url: str, timeout: float, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        raise InputFileError(
            f"the server answered HTTP {err.code} {err.reason};\ncheck the URL\nin file {url}"
        ) from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise InputFileError(
            f"cannot reach the server: {reason};\ncheck the host and port\nin file {url}"
        ) from err


class _HTTPRangeFile(io.RawIOBase):
    """A read-only, seekable view of a URL through HTTP byte ranges (for Parquet's footer)."""

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout, self.pos = url, timeout, 0
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                self.size = int(answer.headers["Content-Length"])
        except (urllib.error.URLError, OSError, TypeError) as err:
            raise InputFileError(
                f"cannot get the size of the file over HTTP: {err};\n"
                f"the server must answer HEAD with Content-Length\nin file {url}"
            ) from err

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.size}[whence]
        self.pos = max(base + offset, 0)
        return self.pos

    def readinto(self, buffer) -> int:
        stop = min(self.pos + len(buffer), self.size)
        if stop <= self.pos:
            return 0
        headers = {"Range": f"bytes={self.pos}-{stop - 1}"}
        with _urlopen(self.url, self.timeout, headers) as answer:
            data = answer.read()
        if answer.status != 206 and len(data) != stop - self.pos:
            data = data[self.pos : stop]  # a server without ranges sent the whole file
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _fsspec_open(src: Source):
    import fsspec

    fix = FSSPEC_SCHEMES[src.scheme]
    try:
        fs, path = fsspec.core.url_to_fs(src.url)
        return fs.open(path, "rb")
    except ImportError as err:
        raise InputFileError(
            f"cannot open a {src.scheme}:// URL: {err};\n{fix}\nin file {src.url}"
        ) from err
    except FileNotFoundError as err:
        raise InputFileError(f"no such file\nin file {src.url}") from err
    except OSError as err:  # libhdfs not found, connection refused, access denied
        raise InputFileError(
            f"cannot open a {src.scheme}:// URL: {err};\n{fix}\nin file {src.url}"
        ) from err


def text_stream(raw, compression: str | None):
    """A stream over ``raw`` that decompresses ``compression``: ISA-L's for gzip where it is
    installed, else a pyarrow input stream."""
    if compression == "gzip" and _igzip is not None:
        return _igzip.IGzipFile(fileobj=raw, mode="rb")
    stream = pa.PythonFile(raw, mode="r")
    return pa.CompressedInputStream(stream, compression) if compression else stream


# ---------------------------------------------------------------------------------------------
# chunks


@dataclass
class RawChunk:
    """Records as parsed: ``table`` (nested, as the file holds them) or ``records`` (dicts),
    whichever the reader has at hand; the other is made on demand by :mod:`records`."""

    key: tuple  # the chunk's place in the file: counted once in .missing/.skipped_lines
    first: int  # record number (0-based) of the chunk's first record
    table: pa.Table | None = None
    records: list[dict] | None = None
    skipped: int = 0  # malformed lines dropped from this chunk

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else self.table.num_rows


@dataclass
class ReadOptions:
    """How a reader reads: ``block_size`` bytes of text or ``batch_rows`` rows per chunk."""

    timeout: float = 30.0
    block_size: int = 4 << 20
    batch_rows: int = 65536
    workers: int = 1
    on_bad_line: str = "error"
    columns: list[str] | None = None  # top-level fields to read (Parquet, CSV)
    as_records: bool = False  # JSON and Avro: hand out dicts instead of tables
    extra: dict = field(default_factory=dict)


def read_chunks(
    src: Source, fmt: str, compression: str | None, opts: ReadOptions, start: int = 0
) -> Iterator[RawChunk]:
    """The chunks of a file from its start (Parquet: from the row group holding ``start``)."""
    if fmt == "avro":
        return _avro_chunks(src, opts)
    if fmt == "parquet":
        return _parquet_chunks(src, opts, start)
    if fmt == "csv":
        return _csv_chunks(src, compression, opts)
    return _json_chunks(src, compression, opts)


def not_this_format(src: Source, fmt: str, compression: str | None, err: BaseException):
    what = f"{compression}-compressed {fmt}" if compression else fmt
    return InputFileError(
        f"cannot read as {what} (the format tried, from the file name or format=): "
        f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__};\n"
        f"check that the file is {what} and complete, or give its real format with format=\n"
        f"in file {src.url}"
    )


def _line_blocks(stream, block_size: int) -> Iterator[tuple[int, memoryview]]:
    """``(first line number, whole lines)``: at most ``block_size`` bytes plus one line, read
    straight into each block's buffer (no copy of the text between reading and parsing)."""
    line, rest = 1, b""
    while True:
        buffer = bytearray(len(rest) + block_size)
        buffer[: len(rest)] = rest
        got = stream.readinto(memoryview(buffer)[len(rest) :])
        if not got:
            if rest.strip():
                yield line, memoryview(rest + b"\n")
            return
        end = len(rest) + got
        cut = buffer.rfind(b"\n", 0, end)
        if cut < 0:  # a line longer than a block: keep reading
            rest = bytes(buffer[:end])
            continue
        block, rest = memoryview(buffer)[: cut + 1], bytes(buffer[cut + 1 : end])
        yield line, block
        line += _newlines(block)


def _newlines(block) -> int:
    """The number of line ends in ``block`` (NumPy counts twice as fast as bytes.count)."""
    return int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n")))


def _json_chunks(src: Source, compression: str | None, opts: ReadOptions) -> Iterator[RawChunk]:
    import pyarrow.json as pj

    raw = open_bytes(src, timeout=opts.timeout)
    first = 0
    try:
        stream = text_stream(raw, compression)
        blocks = _line_blocks(stream, opts.block_size)
        for index, (line, block) in enumerate(_guard(blocks, src, "json", compression)):
            if opts.as_records:
                records, skipped = _json_records(block, line, src, opts.on_bad_line)
                chunk = RawChunk(("json", index), first, records=records, skipped=skipped)
            else:
                table, skipped = _json_table(pj, block, line, src, opts)
                chunk = RawChunk(("json", index), first, table=table, skipped=skipped)
            first += len(chunk)
            yield chunk
    finally:
        raw.close()


def _guard(blocks: Iterator, src: Source, fmt: str, compression: str | None) -> Iterator:
    """``blocks``, with decompression and I/O errors turned into :class:`InputFileError`."""
    while True:
        try:
            item = next(blocks)
        except StopIteration:
            return
        except _READ_ERRORS as err:
            raise not_this_format(src, fmt, compression, err) from err
        yield item


def _json_table(pj, block: memoryview, line: int, src: Source, opts: ReadOptions):
    read = pj.ReadOptions(use_threads=opts.workers > 1, block_size=max(len(block) + 1, 1 << 16))
    try:
        return pj.read_json(pa.BufferReader(pa.py_buffer(block)), read_options=read), 0
    except pa.ArrowInvalid:
        pass  # find the bad lines (this block only), then parse the rest
    good, bad = _split_bad_lines(block, line)
    _refuse_bad(bad, src, opts.on_bad_line)
    try:
        return pj.read_json(io.BytesIO(b"\n".join(good)), read_options=read), len(bad)
    except pa.ArrowInvalid as err:  # Python's json took a line that pyarrow does not
        last = line + _newlines(block) - 1
        if "changed from" in str(err):
            raise DataError(
                f"a field changes type within lines {line}-{last}: {err};\n"
                "give the field one type in every record (write 1.0, not 1, for a float)\n"
                f"in file {src.url}"
            ) from err
        raise DataError(
            f"lines {line}-{last} do not parse as JSON: {err};\n"
            f"fix the lines (NaN and Infinity are not JSON)\nin file {src.url}"
        ) from err


try:  # 3-4x faster than json for the records a preprocessing(rec) hook gets (measured)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover  # the records extra installs it
    _fast_loads = json.loads


def _json_records(block: memoryview, line: int, src: Source, on_bad_line: str):
    """The block's lines as dicts. orjson first; a block it refuses (a bad line, or what
    only Python's json takes: NaN, integers beyond 64 bits) goes line by line through json."""
    try:
        records = [_fast_loads(text) for text in bytes(block).split(b"\n") if text.strip()]
        if all(isinstance(r, dict) for r in records):
            return records, 0
    except ValueError:
        pass
    good, bad = _split_bad_lines(block, line)
    _refuse_bad(bad, src, on_bad_line)
    return [json.loads(text) for text in good], len(bad)


def _split_bad_lines(block: memoryview, line: int) -> tuple[list[bytes], list[tuple[int, str]]]:
    """The good lines of a block that failed to parse, and ``(line number, why)`` of the bad."""
    good, bad = [], []
    for number, text in enumerate(bytes(block).split(b"\n"), start=line):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as err:
            bad.append((number, f"not valid JSON ({err})"))
            continue
        if isinstance(value, dict):
            good.append(text)
        else:
            bad.append((number, f"a JSON {type(value).__name__}, not an object {{...}}"))
    return good, bad


def _refuse_bad(bad: list[tuple[int, str]], src: Source, on_bad_line: str) -> None:
    if bad and on_bad_line == "error":
        number, why = bad[0]
        hint = (
            " (is it JSON lines, one object per line? if not, give its format with format=)"
            if number == 1
            else ""
        )
        raise DataError(
            f"line {number} is {why}{hint};\n"
            f"fix the line, or pass on_bad_line='skip' to skip and count bad lines\n"
            f"in file {src.url}"
        )


def _csv_chunks(src: Source, compression: str | None, opts: ReadOptions) -> Iterator[RawChunk]:
    import pyarrow.csv as pc

    invalid: list = []

    def on_invalid(row) -> str:
        invalid.append(row)
        return "skip" if opts.on_bad_line == "skip" else "error"

    raw = open_bytes(src, timeout=opts.timeout)
    try:
        reader = pc.open_csv(
            text_stream(raw, compression),
            read_options=pc.ReadOptions(use_threads=opts.workers > 1, block_size=opts.block_size),
            parse_options=pc.ParseOptions(invalid_row_handler=on_invalid),
            # an empty field is a missing value in a string column too, as pandas reads it
            # (and as a missing key or null is in the other formats)
            convert_options=pc.ConvertOptions(
                timestamp_parsers=[pc.ISO8601],
                include_columns=opts.columns,
                strings_can_be_null=True,
            ),
        )
        first = 0
        for index in range(1 << 62):
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            skipped, invalid[:] = len(invalid), []
            table = pa.Table.from_batches([batch])
            yield RawChunk(("csv", index), first, table=table, skipped=skipped)
            first += table.num_rows
    except pa.ArrowInvalid as err:
        raise _csv_error(src, compression, err, invalid) from err
    except _READ_ERRORS as err:
        raise not_this_format(src, "csv", compression, err) from err
    finally:
        raw.close()


def _csv_error(src: Source, compression: str | None, err: BaseException, invalid: list):
    if invalid:
        row = invalid[-1]
        where = f"line {row.number}" if row.number is not None else "a line"
        return DataError(
            f"{where} has {row.actual_columns} columns, the header {row.expected_columns}: "
            f"{row.text[:80]!r};\n"
            f"fix the line, or pass on_bad_line='skip' to skip and count bad lines\n"
            f"in file {src.url}"
        )
    if "conversion error" in str(err):
        return DataError(
            f"{str(err).strip()};\n"
            "a CSV column's type is guessed from the first block of rows: make those rows "
            "representative (write 1.0, not 1, in a float column) or raise block_size\n"
            f"in file {src.url}"
        )
    return not_this_format(src, "csv", compression, err)


def _parquet_chunks(src: Source, opts: ReadOptions, start: int) -> Iterator[RawChunk]:
    import pyarrow.parquet as pq

    raw = open_bytes(src, timeout=opts.timeout, seekable=True)
    try:
        try:
            parquet = pq.ParquetFile(raw)
        except _READ_ERRORS as err:
            raise not_this_format(src, "parquet", None, err) from err
        meta = parquet.metadata
        first = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if first + rows <= start:
                first += rows
                continue
            batches = parquet.iter_batches(
                batch_size=opts.batch_rows,
                row_groups=[group],
                columns=opts.columns,
                use_threads=opts.workers > 1,
            )
            for index, batch in enumerate(_guard(batches, src, "parquet", None)):
                yield RawChunk(("parquet", group, index), first, pa.Table.from_batches([batch]))
                first += batch.num_rows
    finally:
        raw.close()


def parquet_rows(src: Source, opts: ReadOptions) -> int:
    """The number of rows a Parquet file's footer declares (no data read)."""
    import pyarrow.parquet as pq

    with open_bytes(src, timeout=opts.timeout, seekable=True) as raw:
        try:
            return pq.ParquetFile(raw).metadata.num_rows
        except _READ_ERRORS as err:
            raise not_this_format(src, "parquet", None, err) from err


def _avro_chunks(src: Source, opts: ReadOptions) -> Iterator[RawChunk]:
    import fastavro

    raw = open_bytes(src, timeout=opts.timeout, seekable=True)  # fastavro seeks
    try:
        try:
            blocks = fastavro.block_reader(raw)
        except _READ_ERRORS as err:
            raise not_this_format(src, "avro", None, err) from err
        schema = avro_arrow_schema(blocks.writer_schema)
        pending: list[dict] = []
        first = index = 0
        for block in _guard(iter(blocks), src, "avro", None):
            pending.extend(block)  # fastavro decodes the block's records
            if len(pending) >= opts.batch_rows:
                yield _avro_chunk(index, first, pending, schema, opts)
                first, index, pending = first + len(pending), index + 1, []
        if pending:
            yield _avro_chunk(index, first, pending, schema, opts)
    finally:
        raw.close()


def avro_rows(src: Source, opts: ReadOptions) -> int:
    """The number of records in an Avro file: one pass over its block headers (the blocks'
    bytes are read, their records are not decoded)."""
    import fastavro

    with open_bytes(src, timeout=opts.timeout, seekable=True) as raw:
        try:
            return sum(block.num_records for block in fastavro.block_reader(raw))
        except _READ_ERRORS as err:
            raise not_this_format(src, "avro", None, err) from err


def _avro_chunk(index: int, first: int, records: list[dict], schema, opts: ReadOptions):
    if opts.as_records:
        return RawChunk(("avro", index), first, records=records)
    return RawChunk(("avro", index), first, pa.Table.from_pylist(records, schema=schema))


class _NoArrowType(Exception):
    """An Avro type without one Arrow type (a union of several, a named reference)."""


_AVRO_PRIMITIVES = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_AVRO_TIMES = {
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def avro_arrow_schema(avro: dict) -> pa.Schema | None:
    """The Arrow schema of an Avro record schema; ``None`` where pyarrow must infer it."""
    try:
        return pa.schema(_avro_type(avro))
    except (_NoArrowType, TypeError):
        return None


def _avro_type(avro) -> pa.DataType:
    if isinstance(avro, list):  # a union: [null, T] is a nullable T
        kinds = [t for t in avro if t != "null"]
        if len(kinds) != 1:
            raise _NoArrowType
        return _avro_type(kinds[0])
    if isinstance(avro, str):
        if avro not in _AVRO_PRIMITIVES:
            raise _NoArrowType
        return _AVRO_PRIMITIVES[avro]
    kind, logical = avro["type"], avro.get("logicalType")
    if logical in _AVRO_TIMES:
        return _AVRO_TIMES[logical]
    if kind == "record":
        return pa.struct([pa.field(f["name"], _avro_type(f["type"])) for f in avro["fields"]])
    if kind == "array":
        return pa.list_(_avro_type(avro["items"]))
    if kind == "enum":
        return pa.string()
    if kind == "map":
        return pa.map_(pa.string(), _avro_type(avro["values"]))
    if kind == "fixed":
        return pa.binary(avro["size"])
    return _avro_type(kind)
