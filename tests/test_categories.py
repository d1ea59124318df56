"""String fields of record files as categories: counted by specs, a vocabulary fixed by merge,
one-hot or index columns in the shards, string class labels, and the same encoding when an
event or record is served (an unseen value in the 'other' slot)."""

from __future__ import annotations

import gzip
import json
import logging

import h5py
import numpy as np
import pyarrow as pa
import pytest

from rootml import categories
from rootml.config import Settings
from rootml.exceptions import ConfigError, DataError
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.specs import file_specs
from rootml.transform import events_to_raw

SITES = ["CERN", "FNAL", "DESY", "RAL"]


def _records(n: int, seed: int, sites: list[str]) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        site = sites[int(rng.integers(len(sites)))] if rng.random() > 0.05 else None
        signal = site in ("CERN", "DESY")
        record = {
            "meta": {"site": site, "id": f"uuid-{seed}-{i}"},
            "size": float(rng.normal(3.0 if signal else 1.0)),
            "kind": "sig" if signal else "bkg",
        }
        if site is None:
            del record["meta"]["site"]  # absent, not null: counted as missing all the same
        out.append(record)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two gzipped JSON-lines files; MARS only in the second, the ids all distinct."""
    d = tmp_path_factory.mktemp("cats")
    made = []
    for name, seed, sites in (("a", 1, SITES), ("b", 2, [*SITES, "MARS"])):
        path = d / f"{name}.jsonl.gz"
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in _records(1500, seed, sites))
        made.append(path)
    return made


def _expected_site_codes(path, vocab) -> np.ndarray:
    """Each record's code, from the file's text (not through rootml's readers)."""
    with gzip.open(path, "rt") as f:
        sites = [json.loads(line)["meta"].get("site") for line in f]
    return np.asarray([vocab.index(s) if s in vocab else len(vocab) for s in sites])


def _pipeline(files, tmp_path, staged: bool, **settings):
    specs = [
        file_specs(
            str(f),
            "events",
            identifiers=(),
            label_branch="kind",
            columns=tmp_path / f"columns-{i}" if staged else None,
        )
        for i, f in enumerate(files)
    ]
    layout = merge(
        specs,
        Settings(tree="events", identifiers=(), chunk_size=700, **settings),
        label_branch="kind",
    )
    shards = preprocess(
        layout,
        range(len(layout["chunks"])),
        tmp_path / "shards",
        columns=[tmp_path / f"columns-{i}" for i in range(len(files))] if staged else (),
    )
    x, y, where = [], [], []
    for s in shards:
        with h5py.File(s) as h5:
            x.append(h5["x"][:])
            y.append(h5["y"][:])
            where += [(str(h5.attrs["file"]), int(e)) for e in h5["entry"][:]]
    return specs, layout, np.concatenate(x), np.concatenate(y), where


@pytest.mark.parametrize("staged", [False, True], ids=["read-again", "staged-codes"])
def test_a_string_field_becomes_one_hot_columns_with_an_other_slot(files, tmp_path, staged):
    specs, layout, x, y, entry = _pipeline(files, tmp_path, staged)
    site = specs[0]["branches"]["meta.site"]
    assert site["kind"] == "category"
    assert set(site["categories"]) == set(SITES)
    assert site["missing"] + site["count"] == 1500
    column = next(c for c in layout["inputs"] if c["branch"] == "meta.site")
    vocab = column["values"]
    assert column["encoding"] == "onehot"
    assert sorted(vocab) == sorted([*SITES, "MARS"])  # MARS was seen, in the second file
    assert layout["features"][column["offset"] : column["offset"] + column["width"]] == [
        *(f"meta.site={v}" for v in vocab),
        "meta.site=other",
    ]
    assert "meta.id" not in layout["read"]  # one distinct id per record: not a category
    # the rows: exactly one flag per event, the one of its value ('other' when missing)
    flags = x[:, column["offset"] : column["offset"] + column["width"]]
    np.testing.assert_array_equal(flags.sum(axis=1), 1.0)
    codes = np.argmax(flags, axis=1)
    expected = {f.name: _expected_site_codes(f, vocab) for f in files}
    want = [expected[name][e] for name, e in entry]
    assert len(want) == 3000
    np.testing.assert_array_equal(codes, want)
    # the labels: class names from the field, sorted
    assert layout["labels"]["classes"] == ["bkg", "sig"]
    assert layout["labels"]["encoding"] == "category"
    signal_sites = [vocab.index("CERN"), vocab.index("DESY")]
    np.testing.assert_array_equal(y.astype(int), np.isin(codes, signal_sites).astype(int))


def test_staged_and_read_again_give_the_same_rows(files, tmp_path):
    a = _pipeline(files, tmp_path / "a", staged=False)
    b = _pipeline(files, tmp_path / "b", staged=True)
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[3], b[3])


def test_index_encoding_and_per_field_choice(files, tmp_path):
    _, layout, x, _, _ = _pipeline(files, tmp_path, False, categorical="index")
    column = next(c for c in layout["inputs"] if c["branch"] == "meta.site")
    assert (column["encoding"], column["width"]) == ("index", 1)
    values = x[:, column["offset"]]
    k = len(column["values"])
    np.testing.assert_allclose(sorted(set(values.tolist())), np.arange(k + 1) / k, rtol=1e-6)
    _, layout, _, _, _ = _pipeline(
        files,
        tmp_path / "per-field",
        False,
        categorical="index",
        categories={"meta.site": "onehot"},
    )
    column = next(c for c in layout["inputs"] if c["branch"] == "meta.site")
    assert column["encoding"] == "onehot"
    with pytest.raises(ConfigError, match=r"string field .meta\.site. must be one of"):
        Settings(categories={"meta.site": "hash"})


def test_a_served_event_encodes_as_training_did_and_an_unseen_value_is_other(files, tmp_path):
    _, layout, _, _, _ = _pipeline(files, tmp_path, False)
    column = next(c for c in layout["inputs"] if c["branch"] == "meta.site")
    off, width = column["offset"], column["width"]
    base = {"size": 1.0}
    raw = events_to_raw(
        [
            {**base, "meta.site": "DESY"},
            {**base, "meta.site": "VENUS"},
            {**base, "meta.site": None},
        ],
        layout,
    )
    desy = column["values"].index("DESY")
    np.testing.assert_array_equal(raw[0, off : off + width], np.eye(width)[desy])
    np.testing.assert_array_equal(raw[1, off : off + width], np.eye(width)[width - 1])
    np.testing.assert_array_equal(raw[2, off : off + width], np.eye(width)[width - 1])
    with pytest.raises(DataError, match=r"'meta\.site' must be a string"):
        events_to_raw([{**base, "meta.site": 3}], layout)


def test_a_string_label_field_with_missing_values_is_refused(tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [{"x": float(i), "kind": "sig" if i % 2 else "bkg"} for i in range(50)]
    rows[7] = {"x": 7.0}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    specs = [file_specs(str(path), "events", identifiers=(), label_branch="kind")]
    with pytest.raises(DataError, match=r"label field 'kind' in file .*m\.jsonl is missing in 1"):
        merge(specs, Settings(tree="events", identifiers=()), label_branch="kind")


def test_identifier_like_strings_are_dropped_in_one_warning(files, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(categories, "MAX_DISTINCT", 100)
    specs = [file_specs(str(f), "events", identifiers=(), label_branch="kind") for f in files]
    assert specs[0]["branches"]["meta.id"]["categories"] is None
    with caplog.at_level(logging.WARNING, logger="rootml.merging"):
        layout = merge(specs, Settings(tree="events", identifiers=()), label_branch="kind")
    assert "meta.id" not in layout["read"]
    assert "dropped 1 string field(s) with a distinct value for most records" in caplog.text


def test_counts_vocabulary_codes_and_the_local_dictionary():
    counts = categories.Counts()
    counts.add(pa.array(["b", "a", None, "b", "c"]))
    counts.add(pa.array(["a", "b"]).dictionary_encode())
    assert counts.to_json() == {"count": 6, "missing": 1, "categories": {"a": 2, "b": 3, "c": 1}}
    merged = categories.merged_counts([{"a": 2, "b": 3}, {"c": 3, "a": 1}])
    assert categories.vocabulary(merged) == ["a", "b", "c"]  # a tie of 3: in value order
    assert categories.vocabulary(merged, most=2) == ["a", "b"]
    assert categories.merged_counts([{"a": 1}, None]) is None
    np.testing.assert_array_equal(
        categories.codes(pa.array(["c", "z", None, "a"]), ["a", "b", "c"]), [2, 3, 3, 0]
    )
    local = categories.LocalDictionary()
    first = local.encode(pa.array(["x", "y", None]))
    second = local.encode(pa.array(["z", "x"]))
    assert local.values == ["x", "y", "z"]
    np.testing.assert_array_equal(first, [0, 1, -1])
    np.testing.assert_array_equal(second, [2, 0])
    assert categories.decode(np.concatenate([first, second]), local.values).to_pylist() == [
        "x", "y", None, "z", "x",
    ]  # fmt: skip
    assert categories.encoding_of("auto", categories.ONEHOT_MAX) == "onehot"
    assert categories.encoding_of("auto", categories.ONEHOT_MAX + 1) == "index"


def test_an_identifier_string_is_not_staged_and_the_rest_is(files, tmp_path, monkeypatch):
    """A field with more distinct values than a category may have (merge drops it) is left
    out of the staged columns instead of growing a dictionary as large as the file."""
    from rootml import columns
    from rootml.columns import open_columns

    monkeypatch.setattr(categories, "MAX_DISTINCT", 100)
    file_specs(str(files[0]), "events", identifiers=(), columns=tmp_path / "c")
    store = open_columns(tmp_path / "c")
    assert "meta.id" not in store.names
    assert {"meta.site", "size", "kind"} <= set(store.names)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        [
            columns.MANIFEST,
            *(
                f
                for b in store.doc["branches"].values()
                for f in (b["values"], b["values"] + ".xxh3")
            ),
        ]
    )
    sites = store.arrays(["meta.site"], 0, 5)["meta.site"].to_list()
    with gzip.open(files[0], "rt") as f:
        assert sites == [json.loads(next(f))["meta"].get("site") for _ in range(5)]


def test_a_float_label_field_is_refused_naming_what_is_accepted(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text(
        "".join(json.dumps({"x": float(i), "kind": 0.5 * i}) + "\n" for i in range(300))
    )
    specs = [file_specs(str(path), "events", identifiers=(), label_branch="kind")]
    with pytest.raises(
        DataError, match=r"(?s)class ids\), or a record field of class names.*f\.jsonl"
    ):
        merge(specs, Settings(tree="events", identifiers=()), label_branch="kind")


def test_dictionary_encoded_values_count_and_encode_as_their_strings(monkeypatch):
    """A dictionary may hold values no record has (a slice of a chunk), repeat a value (Arrow
    allows it) or have non-string values' indices null; an awkward categorical array is taken
    without its strings copied. Each gives what its plain strings give."""
    import awkward as ak

    plain = ["b", None, "a", "b", "b"]
    words = pa.array(["unused", "b", "a", "b"])  # "b" twice, "unused" held by no record
    indices = pa.array([1, None, 2, 3, 1], pa.int32())
    odd = pa.DictionaryArray.from_arrays(indices, words)
    awkward = ak.from_arrow(pa.array(["zz", *plain]).dictionary_encode())[1:]
    assert ak.to_list(awkward) == plain
    for values in (odd, awkward, ak.Array(plain)):
        counts = categories.Counts()
        counts.add(values)
        assert counts.to_json() == {"count": 4, "missing": 1, "categories": {"a": 1, "b": 3}}
        np.testing.assert_array_equal(categories.codes(values, ["a", "q"]), [2, 2, 0, 2, 2])
        local = categories.LocalDictionary()
        staged = local.encode(values)
        assert "unused" not in local.values
        assert "zz" not in local.values
        assert categories.decode(staged, local.values).to_pylist() == plain
    local = categories.LocalDictionary()
    assert local.encode(pa.array(["x", "y"]).dictionary_encode()) is not None
    monkeypatch.setattr(categories, "MAX_DISTINCT", 3)
    assert local.encode(pa.array(["p", "q", "x"])) is None
    assert local.full
    assert local.encode(pa.array(["x"])) is None  # full stays full
    counts = categories.Counts()
    counts.add(pa.array([f"id{i}" for i in range(10)]))
    assert counts.to_json()["categories"] is None
    assert counts.count == 10
