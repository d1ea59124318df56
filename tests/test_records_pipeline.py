"""Record files through the data path: a Parquet or JSON-lines copy of a ROOT file gives the
same specs statistics and the same shard rows as the ROOT file itself."""

from __future__ import annotations

import gzip
import json

import awkward as ak
import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import uproot
from rootfiles import write_events

from rootml.config import Settings
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.specs import file_specs

BRANCHES = ["HT", "MET", "nJet", "Jet_pt", "Jet_eta"]


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """Two ROOT files and their Parquet and gzipped JSON-lines copies."""
    d = tmp_path_factory.mktemp("records")
    out = {"root": [], "parquet": [], "json": []}
    for name, seed, signal in (("s", 1, True), ("b", 2, False)):
        root = write_events(d / f"{name}.root", 1200, seed, signal=signal)
        arrays = uproot.open(root)["events"].arrays(BRANCHES)
        parquet = d / f"{name}.parquet"
        pq.write_table(ak.to_arrow_table(arrays, extensionarray=False), parquet, row_group_size=500)
        lines = d / f"{name}.jsonl.gz"
        with gzip.open(lines, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in ak.to_list(arrays))
        out["root"].append(root)
        out["parquet"].append(parquet)
        out["json"].append(lines)
    return out


def _rows(files, tmp_path, derived=None):
    specs = [
        file_specs(str(f), "events", selected=BRANCHES, identifiers=(), derived=derived)
        for f in files
    ]
    settings = Settings(
        tree="events",
        selected=tuple(BRANCHES),
        identifiers=(),
        chunk_size=400,
        derived=derived or {},
    )
    layout = merge(specs, settings, labels=["1", "0"])
    shards = preprocess(layout, range(len(layout["chunks"])), tmp_path)
    x, entry = [], []
    for s in shards:
        with h5py.File(s) as h5:
            x.append(h5["x"][:])
            entry.append(h5["entry"][:])
    return specs, layout, np.concatenate(x), np.concatenate(entry)


@pytest.mark.parametrize("kind", ["parquet", "json"])
def test_a_record_copy_gives_the_rows_of_the_root_file(copies, tmp_path, kind):
    derived = {"selection": "nJet >= 1", "new_variables": {"lead": "Jet_pt[0]"}}
    r_specs, r_layout, r_x, r_entry = _rows(copies["root"], tmp_path / "root", derived)
    specs, layout, x, entry = _rows(copies[kind], tmp_path / kind, derived)
    assert specs[0]["format"] == kind
    for name in [*BRANCHES, "lead"]:
        got, want = specs[0]["branches"][name], r_specs[0]["branches"][name]
        assert got["kind"] == want["kind"], name
        assert got["count"] == want["count"], name
        assert got["min"] == pytest.approx(want["min"], rel=1e-6), name
        assert got["max"] == pytest.approx(want["max"], rel=1e-6), name
    assert specs[0]["cutflow"] == r_specs[0]["cutflow"]
    assert layout["features"] == r_layout["features"]
    np.testing.assert_array_equal(entry, r_entry)
    np.testing.assert_allclose(x, r_x, atol=1e-6)


def test_a_file_whose_name_says_no_format_reads_with_an_explicit_one(copies, tmp_path):
    """HDFS-style part files: format json (input.yml's format, --format/--dtype) says what
    the name does not; specs, the layout's file table and preprocess all use it."""
    import shutil
    import subprocess
    import sys

    from rootml.exceptions import InputFileError

    parts = []
    for i, src in enumerate(copies["json"]):
        part = tmp_path / f"part-{i:05d}"
        shutil.copy(src, part)
        parts.append(part)
    with pytest.raises(InputFileError):  # without the format it is taken for ROOT
        file_specs(str(parts[0]), "events", selected=BRANCHES, identifiers=())
    specs = [
        file_specs(str(p), "events", selected=BRANCHES, identifiers=(), file_format="json")
        for p in parts
    ]
    assert specs[0]["format"] == "json"
    settings = Settings(tree="events", selected=tuple(BRANCHES), identifiers=(), chunk_size=400)
    layout = merge(specs, settings, labels=["1", "0"])
    assert {f["format"] for f in layout["files"]} == {"json"}
    shards = preprocess(layout, range(len(layout["chunks"])), tmp_path / "shards")
    _, _, want, _ = _rows(copies["json"], tmp_path / "named")
    got = np.concatenate([h5py.File(s)["x"][:] for s in shards])
    np.testing.assert_array_equal(got, want)
    cli = subprocess.run(
        [sys.executable, "-m", "rootml", "specs", str(parts[0]), "--dtype", "json",
         "--branches", ",".join(BRANCHES), "--out", str(tmp_path / "s.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads((tmp_path / "s.json").read_text())["format"] == "json"


def _identity_model(layout: dict, path):
    """A loaded model for ``layout`` whose outputs are its inputs: the rows a request makes."""
    from rootml.server.backends import LoadedModel

    return LoadedModel(
        name="rucio", version="1", path=path, params={}, layout=layout,
        backend="onnx", input_name="x", output_name="y", dim=layout["dim"], outputs=1,
        run=lambda x: x, features=layout["features"],
    )  # fmt: skip


def test_a_served_record_gives_the_row_its_file_gave(tmp_path):
    """``{"record": {...}}`` on /json: the nested record as its JSON-lines file held it, the
    fields the model does not read ignored, gives the raw row the file's reader gives; a
    model trained through a preprocessing(rec) hook refuses records (the server runs no
    uploaded code) and says what to send instead."""
    from rootml.exceptions import RequestError
    from rootml.reading import open_input
    from rootml.rucio_sample import write_rucio_sample
    from rootml.server.backends import LoadedModel
    from rootml.server.protocols import tfaas_rows
    from rootml.transform import raw_rows

    files = write_rucio_sample(tmp_path / "r", files=2, records_per_file=400, seed=9)
    specs = [file_specs(str(f), "events", identifiers=()) for f in files]
    layout = merge(specs, Settings(tree="events", identifiers=()), labels=["0", "1"])
    model = _identity_model(layout, tmp_path)
    with gzip.open(files[0], "rt") as handle:
        records = [json.loads(next(handle)) for _ in range(5)]
    with open_input(str(files[0]), "events") as reader:
        expected = raw_rows(reader.arrays(layout["read"], 0, 5), layout)
    one, single = tfaas_rows({"record": records[0]}, model)
    assert single
    np.testing.assert_array_equal(one, expected[:1])
    many, single = tfaas_rows({"records": records}, model)
    assert not single
    np.testing.assert_array_equal(many, expected)
    # a field missing from a record is missing, as in a file: NaN in the raw row, which the
    # model's scaling pads (as preprocess pads it); a record with none of them is refused
    incomplete = json.loads(json.dumps(records[0]))
    del incomplete["data"]["bytes"]
    (column,) = [c["offset"] for c in layout["inputs"] if c["branch"] == "data.bytes"]
    padded = expected[:1].copy()
    padded[0, column] = np.nan
    np.testing.assert_array_equal(tfaas_rows({"record": incomplete}, model)[0], padded)
    with pytest.raises(RequestError, match=r"record 0 holds none of the fields model"):
        tfaas_rows({"record": {"metadata": {"nothing": 1}}}, model)
    hooked = LoadedModel(**{**model.__dict__, "layout": {**layout, "preprocessing": {"file": "p"}}})
    with pytest.raises(
        RequestError, match="preprocessing\\(rec\\) hook, which this server does not run"
    ):
        tfaas_rows({"record": records[0]}, hooked)


def test_a_server_that_runs_bundle_hooks_serves_records_through_the_models_own_hook(tmp_path):
    """With --run-bundle-hooks (ServerConfig.run_bundle_hooks) the server runs the layout's
    preprocessing(rec) on each record sent, as preprocess ran it on the files' records: the
    row is the one the hooked reader gives. A record the hook drops or fails on is a 400."""
    from rootml.exceptions import RequestError
    from rootml.hooks import hook_document, load_hook
    from rootml.records import open_records
    from rootml.rucio_sample import PREPROC_PY, write_rucio_sample
    from rootml.server.protocols import tfaas_rows
    from rootml.server.store import ModelStore
    from rootml.transform import raw_rows

    files = write_rucio_sample(tmp_path / "r", files=2, records_per_file=400, seed=4)
    hook = tmp_path / "preproc.py"
    hook.write_text(PREPROC_PY)
    doc = hook_document(hook)
    specs = [
        file_specs(str(f), "events", identifiers=(), preprocessing=doc, label_branch="activity")
        for f in files
    ]
    layout = merge(specs, Settings(tree="events", identifiers=()), label_branch="activity")
    model = _identity_model(layout, tmp_path)
    with gzip.open(files[0], "rt") as handle:
        records = [json.loads(line) for line in handle]
    kept = [r for r in records if r["data"]["event_type"] != "transfer-failed"][:6]
    with pytest.raises(RequestError, match="started with --run-bundle-hooks"):
        tfaas_rows({"records": kept}, model)
    assert ModelStore(tmp_path / "s0")._with_hook(model).hook is None  # off by default
    served = ModelStore(tmp_path / "s1", run_hooks=True)._with_hook(model)
    assert served.hook is not None

    with open_records(files[0], preprocessing=load_hook(doc)) as reader:
        names = [n for n in layout["read"] if n != "activity"]
        expected = raw_rows(reader.arrays(names, 0, 6), layout)
    rows, single = tfaas_rows({"records": kept}, served)
    assert not single
    np.testing.assert_array_equal(rows, expected)
    failed = next(r for r in records if r["data"]["event_type"] == "transfer-failed")
    with pytest.raises(RequestError, match="drops record 0"):
        tfaas_rows({"record": failed}, served)
    broken = json.loads(json.dumps(kept[0]))
    del broken["data"]["started_at"]
    with pytest.raises(RequestError, match="preprocessing raised KeyError"):
        tfaas_rows({"record": broken}, served)


def _string_records(n: int = 3000) -> list[dict]:
    rng = np.random.default_rng(3)
    sites = np.array(["CERN", "FNAL", "BNL", "DESY"])[rng.integers(0, 4, n)]
    return [
        {"site": None if rng.random() < 0.05 else str(s), "x": float(v), "kind": str(k)}
        for s, v, k in zip(sites, rng.normal(size=n), rng.choice(["sig", "bkg"], n), strict=True)
    ]


def _written(fmt: str, records: list[dict], folder) -> str:
    """``records`` in one of the formats, as a user's tools would write them: pyarrow's CSV
    writer (a missing string is an empty field), Parquet with dictionary-encoded strings (as
    pandas' categoricals are stored), Avro with a nullable string."""
    import fastavro
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.Table.from_pylist(records)
    path = folder / {"json": "r.jsonl.gz", "csv": "r.csv", "parquet": "r.parquet"}.get(
        fmt, "r.avro"
    )
    if fmt == "json":
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    elif fmt == "parquet":
        encoded = {name: table[name] for name in table.column_names}
        encoded["site"], encoded["kind"] = (table[n].dictionary_encode() for n in ("site", "kind"))
        pq.write_table(pa.table(encoded), path, row_group_size=700)
    else:
        fields = [{"name": "site", "type": ["null", "string"]}, {"name": "x", "type": "double"},
                  {"name": "kind", "type": "string"}]  # fmt: skip
        with open(path, "wb") as f:
            fastavro.writer(f, {"type": "record", "name": "r", "fields": fields}, records)
    return str(path)


def test_string_fields_with_missing_values_give_the_same_rows_in_every_format(tmp_path):
    """A category with missing values and a string label, written as JSON lines, CSV, Parquet
    (dictionary-encoded) and Avro: the same counts, vocabulary, rows and labels from each."""
    records = _string_records()
    results = {}
    for fmt in ("json", "csv", "parquet", "avro"):
        folder = tmp_path / fmt
        folder.mkdir()
        spec = file_specs(_written(fmt, records, folder), "events", identifiers=(),
                          columns=folder / "columns", label_branch="kind")  # fmt: skip
        layout = merge([spec], Settings(tree="events", identifiers=()), labels=None,
                       label_branch="kind")  # fmt: skip
        shards = preprocess(layout, range(len(layout["chunks"])), folder / "shards",
                            columns=[str(folder / "columns")])  # fmt: skip
        rows, labels = [], []
        for s in shards:
            with h5py.File(s) as h5:
                rows.append(h5["x"][:])
                labels.append(h5["y"][:])
        results[fmt] = (spec["branches"]["site"], np.concatenate(rows), np.concatenate(labels))
    site, rows, labels = results["json"]
    assert site["missing"] == sum(r["site"] is None for r in records) > 0
    assert sorted(site["categories"]) == ["BNL", "CERN", "DESY", "FNAL"]
    assert rows.shape == (len(records), 6)  # x, four sites and other
    expected = [["bkg", "sig"].index(r["kind"]) for r in records]
    np.testing.assert_array_equal(labels, expected)
    for fmt, (other_site, other_rows, other_labels) in results.items():
        assert {k: other_site[k] for k in ("count", "missing", "categories")} == {
            k: site[k] for k in ("count", "missing", "categories")
        }, fmt
        np.testing.assert_array_equal(other_rows, rows, err_msg=fmt)
        np.testing.assert_array_equal(other_labels, labels, err_msg=fmt)


def _gappy_records(n: int, seed: int) -> list[dict]:
    """Records where an int and a float field, and one field of a collection's objects, are
    missing from some records (or null), as monitoring records often are."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        record = {"met": float(rng.normal()), "hits": int(rng.integers(0, 50))}
        if rng.random() < 0.2:
            record.pop("hits") if rng.random() < 0.5 else record.update(hits=None)
        if i % 3:
            record["ht"] = float(rng.exponential(100.0))
        muons = [{"pt": float(rng.exponential(20.0))} for _ in range(int(rng.integers(0, 3)))]
        for muon in muons:
            if rng.random() < 0.7:
                muon["eta"] = float(rng.normal())
        records.append({**record, "mu": muons})
    return records


def test_values_missing_from_records_are_counted_and_padded_staged_or_not(tmp_path, caplog):
    """A field absent from some records (or null), and an object without one of its fields,
    is missing: specs counts it and takes its statistics over the values there (an int field
    is not filled with a huge number), and the shards hold the padding value where it is
    missing, as for a missing object, whether preprocess reads staged columns or the file;
    the raw row a served record gets has NaN there, which the model's scaling pads."""
    from rootml.reading import open_input
    from rootml.server.protocols import record_rows
    from rootml.transform import raw_rows, scale_rows

    paths, kept = [], {}
    for name, seed in (("a", 1), ("b", 2)):
        kept[name] = _gappy_records(1500, seed)
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("".join(json.dumps(r) + "\n" for r in kept[name]))
    records = kept["a"]
    settings = Settings(tree="events", identifiers=(), chunk_size=500)
    runs = {}
    caplog.set_level("INFO", logger="rootml.merging")
    for staged in (True, False):
        out = tmp_path / ("staged" if staged else "direct")
        columns = [out / p.stem for p in paths] if staged else [None] * len(paths)
        specs = [file_specs(str(p), "events", identifiers=(), columns=c)
                 for p, c in zip(paths, columns, strict=True)]  # fmt: skip
        layout = merge(specs, settings, labels=["1", "0"])
        shards = preprocess(layout, range(len(layout["chunks"])), out / "shards",
                            columns=[str(c) for c in columns] if staged else ())  # fmt: skip
        x = []
        for s in shards:
            with h5py.File(s) as h5:
                x.append(h5["x"][:])
        runs[staged] = (specs[0], layout, np.concatenate(x))
    (spec, layout, x), (_, _, direct) = runs[True], runs[False]
    assert "values missing from some records, padded as missing objects: hits " in caplog.text
    np.testing.assert_array_equal(x, direct)
    branches = spec["branches"]
    no_hits = sum(r.get("hits") is None for r in records)
    assert branches["hits"]["missing"] == no_hits
    assert branches["hits"]["count"] == len(records) - no_hits
    assert branches["hits"]["max"] == max(r["hits"] for r in records if r.get("hits") is not None)
    assert branches["ht"]["missing"] == sum("ht" not in r for r in records)
    assert branches["mu.eta"]["missing"] == sum("eta" not in m for r in records for m in r["mu"])
    assert "missing" not in branches["met"]
    assert "missing" not in branches["mu.pt"]
    assert branches["hits"]["nan"] == branches["ht"]["nan"] == branches["mu.eta"]["nan"] == 0
    offset = {c["branch"]: c["offset"] for c in layout["inputs"]}
    pad = np.float32(layout["pad_value"])
    rows = x[: len(records)]  # file a's rows, in its record order
    gone = np.array([r.get("hits") is None for r in records])
    assert (rows[gone, offset["hits"]] == pad).all()
    assert (rows[~gone, offset["hits"]] != pad).any()
    first_eta = np.array([bool(r["mu"]) and "eta" not in r["mu"][0] for r in records])
    assert (rows[first_eta, offset["mu.eta"]] == pad).all()
    assert (rows[first_eta, offset["mu.pt"]] != pad).all()  # the muon is there, its eta not
    model = _identity_model(layout, tmp_path)
    served = record_rows(records[:50], model, single=False)
    with open_input(str(paths[0]), "events") as reader:
        np.testing.assert_array_equal(
            served, raw_rows(reader.arrays(layout["read"], 0, 50), layout)
        )
    assert np.isnan(served[gone[:50], offset["hits"]]).all()
    np.testing.assert_array_equal(scale_rows(served, layout), rows[:50])
