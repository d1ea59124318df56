"""rootml.records: JSON lines, CSV, Parquet and Avro files written here, read back through
RootInput's interface; bad inputs named by file, line and field; MLaaS4HEP's hooks."""

from __future__ import annotations

import bz2
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path

import awkward as ak
import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from rootml import recordfiles
from rootml.exceptions import BranchError, ConfigError, DataError, InputFileError
from rootml.reading import CATEGORY, FLAT, JAGGED, UNSUPPORTED
from rootml.records import load_preprocessing, open_records
from rootml.rucio_sample import write_rucio_sample

N = 250
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def make_records(n: int = N, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        muons = [
            {"pt": float(rng.exponential(20)), "q": int(rng.choice([-1, 1]))}
            for _ in range(int(rng.integers(0, 4)))
        ]
        out.append(
            {
                "id": i,
                "x": float(rng.normal()),
                "ok": bool(i % 3 == 0),
                "site": ["CERN", "FNAL", "DESY"][i % 3],
                "when": f"2024-05-{1 + i % 28:02d}T12:00:{i % 60:02d}.250",
                "data": {"bytes": int(rng.integers(0, 10**9)), "rate": float(rng.uniform())},
                "hits": [int(h) for h in rng.integers(0, 100, int(rng.integers(0, 5)))],
                "muons": muons,
            }
        )
    return out


def seconds(iso: str) -> float:
    return (datetime.fromisoformat(iso).replace(tzinfo=timezone.utc) - EPOCH).total_seconds()


def expected(records: list[dict]) -> dict[str, list]:
    return {
        "id": [r["id"] for r in records],
        "x": [r["x"] for r in records],
        "ok": [r["ok"] for r in records],
        "when": [seconds(r["when"]) for r in records],
        "data.bytes": [r["data"]["bytes"] for r in records],
        "data.rate": [r["data"]["rate"] for r in records],
        "hits": [r["hits"] for r in records],
        "muons.pt": [[m["pt"] for m in r["muons"]] for r in records],
        "muons.q": [[m["q"] for m in r["muons"]] for r in records],
    }


NESTED = list(expected(make_records(1)))
FLAT_NAMES = ["id", "x", "ok", "when"]


def lines(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def write_json(path: Path, records: list[dict]) -> Path:
    data = lines(records)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif path.name.endswith(".bz2"):
        data = bz2.compress(data)
    path.write_bytes(data)
    return path


def write_csv(path: Path, records: list[dict]) -> Path:
    table = pa.table({k: [r[k] for r in records] for k in ("id", "x", "ok", "site", "when")})
    pacsv.write_csv(table, str(path.with_suffix(".tmp")))
    data = path.with_suffix(".tmp").read_bytes()
    path.with_suffix(".tmp").unlink()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def write_parquet(path: Path, records: list[dict], row_group_size: int = 60) -> Path:
    table = pa.Table.from_pylist(records)
    when = pa.array([datetime.fromisoformat(r["when"]) for r in records], pa.timestamp("ms"))
    table = table.set_column(table.column_names.index("when"), "when", when)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


AVRO_SCHEMA = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "x", "type": "double"},
        {"name": "ok", "type": "boolean"},
        {"name": "site", "type": "string"},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {
            "name": "data",
            "type": {
                "type": "record",
                "name": "Data",
                "fields": [{"name": "bytes", "type": "long"}, {"name": "rate", "type": "double"}],
            },
        },
        {"name": "hits", "type": {"type": "array", "items": "long"}},
        {
            "name": "muons",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Muon",
                    "fields": [{"name": "pt", "type": "double"}, {"name": "q", "type": "long"}],
                },
            },
        },
    ],
}


def write_avro(path: Path, records: list[dict]) -> Path:
    rows = [
        {**r, "when": datetime.fromisoformat(r["when"]).replace(tzinfo=timezone.utc)}
        for r in records
    ]
    with open(path, "wb") as out:
        fastavro.writer(out, AVRO_SCHEMA, rows, sync_interval=2000)
    return path


WRITERS = {
    "events.jsonl": write_json,
    "events.ndjson": write_json,
    "events.json.gz": write_json,
    "events.json.bz2": write_json,
    "events.parquet": write_parquet,
    "events.avro": write_avro,
}
CSV_WRITERS = {"events.csv": write_csv, "events.csv.gz": write_csv}


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return make_records()


@pytest.fixture(params=sorted(WRITERS))
def nested_file(request, tmp_path: Path, records) -> Path:
    return WRITERS[request.param](tmp_path / request.param, records)


@pytest.fixture(params=sorted(CSV_WRITERS))
def csv_file(request, tmp_path: Path, records) -> Path:
    return CSV_WRITERS[request.param](tmp_path / request.param, records)


def assert_values(array: ak.Array, want: dict[str, list]) -> None:
    for name, values in want.items():
        got = array[name]
        if name in ("x", "data.rate", "muons.pt"):
            np.testing.assert_allclose(ak.flatten(got, axis=None), ak.flatten(values, axis=None))
            if got.ndim > 1:
                assert ak.num(got).tolist() == ak.num(values).tolist()
        else:
            assert got.to_list() == values, name


# ---------------------------------------------------------------------------------------------
# values, branches, chunks


def test_values_read_equal_values_written(nested_file: Path, records):
    with open_records(nested_file) as reader:
        assert reader.entries == N
        array = reader.arrays(NESTED)
    assert array.fields == NESTED
    assert_values(array, expected(records))


def test_csv_values_read_equal_values_written(csv_file: Path, records):
    with open_records(csv_file) as reader:
        assert reader.format == "csv"
        assert reader.entries == N
        array = reader.arrays(FLAT_NAMES)
    want = expected(records)
    assert_values(array, {k: want[k] for k in FLAT_NAMES})


def test_nested_records_and_lists_are_branches_like_a_root_collection(nested_file: Path):
    with open_records(nested_file) as reader:
        b = reader.branches
        array = reader.arrays(["data.bytes", "muons.pt", "hits"], 0, 10)
    assert (b["data.bytes"].kind, b["data.bytes"].dtype) == (FLAT, "int64")
    assert (b["when"].kind, b["when"].dtype) == (FLAT, "float64")  # a timestamp: seconds
    assert (b["muons.pt"].kind, b["muons.pt"].collection) == (JAGGED, "muons")
    assert (b["muons.q"].collection, b["hits"].collection) == ("muons", "hits")
    assert (b["site"].kind, b["site"].dtype) == (CATEGORY, "string")  # rootml.categories
    assert (
        str(array.type)
        == '10 * {"data.bytes": int64, "muons.pt": var * float64, hits: var * int64}'
    )


@pytest.mark.parametrize(
    "name", ["events.jsonl", "events.json.gz", "events.parquet", "events.avro"]
)
def test_chunked_iteration_gives_the_arrays_of_one_read(tmp_path: Path, records, name):
    path = WRITERS[name](tmp_path / name, records)
    with open_records(path, block_size=2048, batch_rows=40) as reader:
        whole = reader.arrays(NESTED)
        chunks = list(reader.iterate(NESTED, 33))
    assert [lo for lo, _ in chunks] == list(range(0, N, 33))
    assert [len(c) for _, c in chunks] == [33] * (N // 33) + [N % 33]
    assert ak.to_list(ak.concatenate([c for _, c in chunks])) == ak.to_list(whole)


def test_memory_is_bounded_by_the_chunk_not_the_file(tmp_path: Path):
    path = write_json(tmp_path / "big.json.gz", make_records(4000))
    block = 8192
    raw = recordfiles.open_bytes(recordfiles.source_of(path), timeout=5)
    blocks = list(recordfiles._line_blocks(recordfiles.text_stream(raw, "gzip"), block))
    raw.close()
    longest = max(len(line) for line in lines(make_records(4000)).splitlines())
    assert len(blocks) > 50
    assert max(len(b) for _, b in blocks) <= block + longest
    with open_records(path, block_size=block) as reader:
        sizes = [len(c) for _, c in reader.iterate(["x", "muons.pt"], 500)]
        assert sizes == [500] * 8
        assert reader.entries == 4000


def test_ranges_read_backwards_and_forwards_equal_slices(nested_file: Path, records):
    with open_records(nested_file, block_size=1024, batch_rows=50) as reader:
        tail = reader.arrays(["id", "muons.pt"], 200, 240)
        head = reader.arrays(["id", "muons.pt"], 5, 9)  # behind the cursor: a restart
        middle = reader.arrays(["id"], 9, 130)
    assert tail.id.tolist() == list(range(200, 240))
    assert head.id.tolist() == [5, 6, 7, 8]
    assert middle.id.tolist() == list(range(9, 130))
    assert head["muons.pt"].tolist() == [[m["pt"] for m in r["muons"]] for r in records[5:9]]


def test_format_from_the_argument_overrides_the_name(tmp_path: Path, records):
    path = write_json(tmp_path / "events.dat", records[:20])
    with open_records(path, format="json") as reader:
        assert reader.entries == 20


def test_fields_keep_only_those_names_and_their_leaves(nested_file: Path):
    with open_records(nested_file, fields=["id", "muons"]) as reader:
        assert list(reader.branches) == ["id", "muons.pt", "muons.q"]


def test_an_empty_file_has_no_entries(tmp_path: Path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with open_records(path) as reader:
        assert (reader.entries, reader.branches) == (0, {})


# ---------------------------------------------------------------------------------------------
# bad input


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_FILES = {
    "not gzip": (
        "events.json.gz",
        '{"a": 1}\n',
        InputFileError,
        r"(?s)cannot read as gzip-compressed json.*give its real format with format=\nin file .*events\.json\.gz",
    ),
    "not parquet": (
        "events.parquet",
        "a,b\n1,2\n",
        InputFileError,
        r"(?s)cannot read as parquet.*\nin file .*events\.parquet",
    ),
    "not avro": (
        "events.avro",
        '{"a": 1}\n',
        InputFileError,
        r"(?s)cannot read as avro.*\nin file .*events\.avro",
    ),
    "csv named json": (
        "events.json",
        "a,b\n1,2\n",
        DataError,
        r"(?s)line 1 is not valid JSON .*is it JSON lines.*format=.*\nin file .*events\.json",
    ),
    "malformed line": (
        "events.jsonl",
        '{"a": 1}\n{"a": 2}\n{"a": 3,,}\n{"a": 4}\n',
        DataError,
        r"(?s)line 3 is not valid JSON.*on_bad_line='skip'.*\nin file .*events\.jsonl",
    ),
    "array line": (
        "events.jsonl",
        '{"a": 1}\n[1, 2]\n',
        DataError,
        r"(?s)line 2 is a JSON list, not an object",
    ),
    "short csv row": (
        "events.csv",
        "a,b\n1,2\n3,4\n5\n6,7\n",
        DataError,
        r"(?s)line 4 has 1 columns, the header 2.*on_bad_line='skip'.*\nin file .*events\.csv",
    ),
    "type changes in a block": (
        "events.jsonl",
        '{"a": 1}\n{"a": "x"}\n',
        DataError,
        (
            r"(?s)a field changes type within lines 1-2: .*Column\(/a\) changed from number to "
            r"string.*one type in every record .*\nin file .*events\.jsonl"
        ),
    ),
    "type changes later": (
        "events.jsonl",
        '{"a": 1}\n' * 1000 + '{"a": "' + "x" * 100 + '"}\n',
        DataError,
        (
            r"(?s)field 'a' is int64 \(flat\) in the first records, but records 1000-1000 hold string"
            r".*one type in every record .*\nin file"
        ),
    ),
    "unknown ending": (
        "events.txt",
        '{"a": 1}\n',
        InputFileError,
        r"(?s)cannot tell the record format from the name 'events.txt'.*\.jsonl.*format=",
    ),
    "compressed parquet": (
        "events.parquet.gz",
        "x",
        InputFileError,
        r"(?s)a parquet file compresses its own blocks.*decompress it first",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_names_the_file_the_place_and_the_fix(tmp_path: Path, case):
    name, text, error, match = BAD_FILES[case]
    path = _text(tmp_path / name, text)
    with pytest.raises(error, match=match), open_records(path, block_size=64) as reader:
        reader.arrays([n for n, b in reader.branches.items() if b.kind != UNSUPPORTED])


def _damaged_gzip(how: str, text: bytes) -> bytes:
    packed = gzip.compress(text)
    if how == "cut short":
        return packed[: len(packed) // 2]
    return packed[:-8] + bytes(8)  # the trailer's CRC and length do not match the text


@pytest.mark.parametrize("decompressor", ["isal", "pyarrow"])
@pytest.mark.parametrize("how", ["cut short", "wrong checksum"])
@pytest.mark.parametrize("name", ["events.json.gz", "events.csv.gz"])
def test_a_damaged_gzip_file_is_named_with_the_format_tried(
    tmp_path: Path, monkeypatch, name, how, decompressor
):
    """ISA-L or pyarrow's zlib stream failing mid-file is a clear error, however it breaks."""
    assert recordfiles._igzip is not None  # the records and test extras install isal
    if decompressor == "pyarrow":
        monkeypatch.setattr(recordfiles, "_igzip", None)
    rows = "".join(f'{{"a": {i}, "b": "x{i % 7}"}}\n' for i in range(20_000))
    if name.startswith("events.csv"):
        rows = "a,b\n" + "".join(f"{i},x{i % 7}\n" for i in range(20_000))
    path = tmp_path / name
    path.write_bytes(_damaged_gzip(how, rows.encode()))
    fmt = "csv" if "csv" in name else "json"
    match = rf"(?s)cannot read as gzip-compressed {fmt}.*\nin file .*{name}"
    with pytest.raises(InputFileError, match=match), open_records(path, block_size=4096) as r:
        r.arrays(list(r.branches))


def test_an_unknown_format_lists_the_known_ones(tmp_path: Path):
    path = _text(tmp_path / "events.jsonl", '{"a": 1}\n')
    with pytest.raises(
        ConfigError, match=r"unknown record format 'xml' \(known: json, csv, parquet, avro\)"
    ):
        open_records(path, format="xml")


def test_a_missing_field_lists_the_closest(nested_file: Path):
    with (
        open_records(nested_file) as reader,
        pytest.raises(
            BranchError, match=r"field 'data.byte' is not in the .* records \(closest: 'data.bytes'"
        ),
    ):
        reader.arrays(["data.byte"])


def test_a_string_field_reads_as_strings_and_a_list_of_strings_is_refused(
    nested_file: Path, records, tmp_path: Path
):
    with open_records(nested_file) as reader:
        sites = reader.arrays(["site"])["site"].to_list()
    assert sites == [r["site"] for r in records]
    listed = tmp_path / "tags.jsonl"
    listed.write_text('{"x": 1.0, "tags": ["a", "b"]}\n{"x": 2.0, "tags": []}\n')
    with (
        open_records(listed) as reader,
        pytest.raises(BranchError, match=r"field 'tags' cannot be used: a list of strings"),
    ):
        reader.arrays(["tags"])


@pytest.mark.parametrize(
    ("url", "fix"),
    [
        ("s3://bucket/events.parquet", r"pip install s3fs\nin file s3://bucket/events\.parquet"),
        ("hdfs://namenode:8020/data/events.jsonl", r"libhdfs.*webhdfs://"),
    ],
)
def test_a_missing_filesystem_package_is_named(url, fix):
    pytest.importorskip("fsspec")
    if url.startswith("s3") and _has("s3fs"):
        pytest.skip("s3fs is installed")
    with pytest.raises(InputFileError, match=fix):
        open_records(url)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# skipping bad lines, missing fields


def test_skipped_lines_are_counted_and_the_good_ones_read(tmp_path: Path, records):
    good = lines(records[:10]).splitlines(keepends=True)
    text = b"".join([*good[:3], b"{oops\n", *good[3:7], b"[1]\n", *good[7:]])
    path = tmp_path / "events.jsonl"
    path.write_bytes(text)
    with open_records(path, on_bad_line="skip") as reader:
        assert reader.entries == 10
        assert reader.skipped_lines == 2
        assert reader.arrays(["id"]).id.tolist() == list(range(10))


def test_csv_rows_with_the_wrong_column_count_can_be_skipped(tmp_path: Path):
    path = _text(tmp_path / "events.csv", "a,b\n1,2\n3\n4,5\n6,7,8\n9,10\n")
    with open_records(path, on_bad_line="skip") as reader:
        assert reader.arrays(["a"]).a.tolist() == [1, 4, 9]
        assert reader.skipped_lines == 2


def test_missing_fields_are_counted_and_filled(tmp_path: Path):
    rows = [{"a": 1, "b": 2.0, "m": [{"pt": 1.0}]}, {"a": 2}, {"a": 3, "b": None, "m": []}]
    path = write_json(tmp_path / "events.jsonl", rows)
    with open_records(path) as reader:
        array = reader.arrays(["a", "b", "m.pt"])
        assert reader.missing == {"b": 2, "m.pt": 1}
    assert array.b.tolist() == [2.0, None, None]
    assert array["m.pt"].tolist() == [[1.0], [], []]  # a missing list is an empty one
    assert str(array.type) == '3 * {a: int64, b: ?float64, "m.pt": var * float64}'


def test_fields_first_seen_after_the_sample_are_counted_as_ignored(tmp_path: Path):
    rows = [{"a": i} for i in range(1500)] + [{"a": 1, "late": 5}]
    path = write_json(tmp_path / "events.jsonl", rows)
    with open_records(path, block_size=1024) as reader:
        assert "late" not in reader.branches
        assert reader.entries == 1501
        assert reader.ignored == {"late": 1}


def test_timestamps_become_seconds_since_the_epoch(tmp_path: Path):
    rows = [{"t": "2024-01-01T00:00:01Z"}, {"t": "2024-01-01T01:00:00+01:00"}]
    path = write_json(tmp_path / "events.jsonl", rows)
    with open_records(path) as reader:
        assert reader.arrays(["t"]).t.tolist() == [1704067201.0, 1704067200.0]


# ---------------------------------------------------------------------------------------------
# preprocessing hooks


def test_preprocessing_is_called_once_per_record_with_the_parsed_dict(nested_file: Path, records):
    seen = []

    def preprocessing(rec):
        seen.append(rec)
        if rec["id"] % 5 == 0:
            return None
        return {"id": rec["id"], "mb": rec["data"]["bytes"] / 1e6, "n": len(rec["muons"])}

    with open_records(nested_file, preprocessing=preprocessing, block_size=4096) as reader:
        array = reader.arrays(["id", "mb", "n"])
        assert reader.entries == N - N // 5  # after the hook: one more pass
    assert [r["id"] for r in seen[:N]] == list(range(N))
    if nested_file.name.startswith("events.json"):
        assert seen[:N] == records  # exactly what json.loads gives, nested dicts intact
    assert seen[7]["data"]["bytes"] == records[7]["data"]["bytes"]
    assert array.id.tolist() == [i for i in range(N) if i % 5]
    assert set(reader.branches) == {"id", "mb", "n"}
    assert reader.branches["mb"].dtype == "float64"


def test_preprocessing_can_return_lists_as_jagged_branches(tmp_path: Path, records):
    path = write_json(tmp_path / "events.jsonl", records)

    def preprocessing(rec):
        return {"pt": [m["pt"] for m in rec["muons"]], "x": rec["x"]}

    with open_records(path, preprocessing=preprocessing) as reader:
        assert reader.branches["pt"].kind == JAGGED
        array = reader.arrays(["pt"])
    assert ak.num(array.pt).tolist() == [len(r["muons"]) for r in records]


def _raises(rec):
    return {"a": 1 / (rec["id"] - 3)}


def _list(rec):
    return [rec["id"]] if rec["id"] == 2 else {"a": 1}


def _keys(rec):
    return {"a": 1, "b": 2} if rec["id"] != 5 else {"a": 1, "c": 3}


@pytest.mark.parametrize(
    ("function", "match"),
    [
        (
            _raises,
            (
                r"preprocessing raised at record 3 \(records count from 0\): "
                r"ZeroDivisionError: division by zero\n\(at test_records.py line \d+\);\n"
                r"fix preprocessing .*\nin file .*events\.jsonl"
            ),
        ),
        (_list, r"(?s)returned a list for record 2 .*return a dict .*or None.*\nin file .*events"),
        (
            _keys,
            (
                r"different keys for record 5 than for record 0: record 5 lacks \['b'\] and adds "
                r"\['c'\];\nreturn the same keys for every record"
            ),
        ),
    ],
)
def test_preprocessing_errors_name_the_record_and_the_fix(tmp_path: Path, records, function, match):
    path = write_json(tmp_path / "events.jsonl", records[:20])
    with pytest.raises(DataError, match=match):
        open_records(path, preprocessing=function).arrays(["a"])


def test_the_vectorised_hook_is_called_once_per_chunk(tmp_path: Path, records):
    path = write_parquet(tmp_path / "events.parquet", records, row_group_size=50)
    calls = []

    def preprocess_chunk(chunk: pa.Table):
        calls.append(chunk.num_rows)
        array = ak.from_arrow(chunk)
        keep = array[array.x > 0]
        return ak.zip({"x": keep.x, "n": ak.num(keep.muons)}, depth_limit=1)

    with open_records(path, preprocessing=preprocess_chunk) as reader:
        array = reader.arrays(["x", "n"])
    assert calls == [50] * 5
    assert array.x.tolist() == [r["x"] for r in records if r["x"] > 0]
    assert array.n.tolist() == [len(r["muons"]) for r in records if r["x"] > 0]


def test_load_preprocessing_finds_the_function_by_name(tmp_path: Path, records):
    per_record = _text(
        tmp_path / "pre.py", "def preprocessing(rec):\n    return {'id2': rec['id'] * 2}\n"
    )
    per_chunk = _text(
        tmp_path / "chunk.py",
        "import pyarrow.compute as pc\n"
        "def preprocess_chunk(chunk):\n"
        "    return chunk.select(['id']).append_column('x2', pc.multiply(chunk['x'], 2))\n",
    )
    path = write_json(tmp_path / "events.jsonl", records[:30])
    with open_records(path, preprocessing=load_preprocessing(per_record)) as reader:
        assert reader.arrays(["id2"]).id2.tolist() == [2 * i for i in range(30)]
    with open_records(path, preprocessing=load_preprocessing(per_chunk)) as reader:
        assert reader.arrays(["x2"]).x2.tolist() == [2 * r["x"] for r in records[:30]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "def model(idim):\n    pass\ndef helper():\n    pass\n",
            r"defines no function preprocessing\(rec\).*\(it defines: helper, model\)",
        ),
        (
            "def preprocessing(rec):\n    return rec\ndef preprocess_chunk(c):\n    return c\n",
            r"defines both",
        ),
        ("def preprocessing(rec)\n", r"syntax error at line 1"),
        ("import not_a_module_here\n", r"running the file raised ModuleNotFoundError"),
    ],
)
def test_load_preprocessing_errors_name_the_file(tmp_path: Path, text, match):
    path = _text(tmp_path / "pre.py", text)
    with pytest.raises(ConfigError, match=match + r"(.|\n)*in file .*pre\.py"):
        load_preprocessing(path)


# ---------------------------------------------------------------------------------------------
# remote, Rucio sample


@pytest.mark.network
@pytest.mark.parametrize("name", ["events.json.gz", "events.parquet", "events.avro"])
def test_https_or_http_inputs_read_like_local_ones(http_server, records, name):
    path = WRITERS[name](http_server.root / name, records)
    with open_records(http_server.url(name)) as remote, open_records(path) as local:
        assert remote.path.startswith("http://127.0.0.1:")
        assert remote.entries == N
        assert ak.to_list(remote.arrays(NESTED)) == ak.to_list(local.arrays(NESTED))
    if name.endswith(".parquet"):  # the footer and the row groups through byte ranges
        assert any(r[2] for r in http_server.requests)


@pytest.mark.network
def test_a_missing_remote_file_names_the_url(http_server):
    with pytest.raises(
        InputFileError, match=r"(?s)HTTP 404.*\nin file http://127\.0\.0\.1:\d+/nope\.jsonl"
    ):
        open_records(http_server.url("nope.jsonl"))


def test_the_rucio_sample_is_deterministic_and_learnable(tmp_path: Path):
    one = write_rucio_sample(tmp_path / "a", files=2, records_per_file=3000, seed=4)
    two = write_rucio_sample(tmp_path / "b", files=2, records_per_file=3000, seed=4)
    other = write_rucio_sample(tmp_path / "c", files=1, records_per_file=3000, seed=5)
    assert [p.name for p in one] == ["rucio-000.json.gz", "rucio-001.json.gz"]
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    assert one[0].read_bytes() != other[0].read_bytes()
    label = lambda rec: {
        "staging": int(rec["data"]["activity"] == "Staging"),
        "size": rec["data"]["file_size"],
    }
    with open_records(one[0], preprocessing=label) as reader:
        array = reader.arrays(["staging", "size"])
    with open_records(one[0]) as reader:
        assert reader.entries == 3000
        assert reader.branches["data.activity"].dtype == "string"
        assert reader.branches["data.tf_created_at"].kind == FLAT
        assert reader.branches["data.created_at"].dtype == "float64"
    staging = array.staging.to_numpy() == 1
    assert 0.2 < staging.mean() < 0.3
    size = array["size"].to_numpy()
    assert np.median(size[staging]) > 2 * np.median(size[~staging])


def test_isal_and_pyarrow_decompress_a_gzip_file_to_the_same_arrays(tmp_path: Path, monkeypatch):
    (path,) = write_rucio_sample(tmp_path, files=1, records_per_file=5000, seed=2)

    def read() -> ak.Array:
        with open_records(path, block_size=1 << 16) as reader:
            readable = [n for n, b in reader.branches.items() if b.kind != UNSUPPORTED]
            return reader.arrays(readable)

    fast = read()
    monkeypatch.setattr(recordfiles, "_igzip", None)
    slow = read()
    assert len(fast) == 5000
    assert fast.fields == slow.fields
    assert fast.to_list() == slow.to_list()
