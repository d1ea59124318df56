"""Staged columns: what specs writes with --columns is what the ROOT file holds, preprocess
gives the same shards from them, and a damaged or foreign staging is refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot
from rootfiles import event_arrays, write_events, write_shapes, write_tree

from rootml.columns import BLOCK, MANIFEST, open_columns, stores_by_basename
from rootml.config import Settings
from rootml.exceptions import BranchError, ConfigError, InputFileError, LayoutError
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.reading import open_input
from rootml.specs import file_specs

IDS = ("run", "event", "luminosityBlock")


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """Two files (TTree, several baskets, specs in steps smaller than a basket) staged."""
    d = tmp_path_factory.mktemp("columns")
    files = [
        write_events(d / "sig.root", 1300, seed=21, signal=True, basket=250),
        write_events(d / "bkg.root", 900, seed=22, basket=250),
    ]
    folders = [d / "col-sig", d / "col-bkg"]
    specs = [
        file_specs(str(f), "events", identifiers=IDS, columns=c, step=333)
        for f, c in zip(files, folders, strict=True)
    ]
    return files, folders, specs


def _same(a: ak.Array, b: ak.Array) -> None:
    assert a.fields == b.fields
    for name in a.fields:
        assert ak.to_list(a[name]) == ak.to_list(b[name]), name


@pytest.mark.parametrize(("start", "stop"), [(0, 1300), (0, 1), (249, 251), (1000, 1300)])
def test_staged_ranges_equal_the_root_file(staged, start, stop):
    files, folders, _ = staged
    store = open_columns(folders[0])
    names = store.names
    assert set(names) >= {"HT", "MET", "nPV", "trigger", "Jet_pt", "Jet_eta", "Muon_pt"}
    with open_input(str(files[0]), "events") as root:
        _same(store.arrays(names, start, stop), root.arrays(names, start, stop))


def test_manifest_records_the_source(staged):
    _, folders, specs = staged
    doc = json.loads((folders[1] / MANIFEST).read_text())
    assert doc["file"]["basename"] == "bkg.root"
    assert doc["entries"] == specs[1]["entries"] == 900
    assert doc["branches"]["trigger"]["dtype"] == "|b1"
    assert doc["branches"]["Jet_pt"]["kind"] == "jagged"
    assert doc["bytes"] == sum(
        p.stat().st_size for p in folders[1].iterdir() if p.suffix != ".json"
    )


@pytest.mark.parametrize(
    "kw", [{}, {"jagged_cap": 2, "counts": True, "masks": True}, {"nevts": 1000}]
)
def test_shards_from_columns_equal_shards_from_root(staged, tmp_path, kw):
    _, folders, specs = staged
    layout = merge(specs, Settings(tree="events", chunk_size=400, **kw), labels=["1", "0"])
    ids = range(len(layout["chunks"]))
    a = preprocess(layout, ids, tmp_path / "root")
    b = preprocess(layout, ids, tmp_path / "staged", columns=folders)
    assert [p.name for p in a] == [p.name for p in b]
    assert len(a) > 2
    for pa, pb in zip(a, b, strict=True):
        with h5py.File(pa) as fa, h5py.File(pb) as fb:
            assert dict(fa.attrs) == dict(fb.attrs)
            for key in fa:
                assert np.array_equal(fa[key][...], fb[key][...]), (pa.name, key)


def test_fixed_size_arrays_and_rntuple_fields_stage(tmp_path):
    ttree = write_shapes(tmp_path / "t.root", "ttree", n=300)
    ntuple = write_shapes(tmp_path / "n.root", "rntuple", n=300)
    for path, names in ((ttree, ["met", "p3", "Jet_pt"]), (ntuple, ["met", "Jet.pt", "Jet.eta"])):
        out = tmp_path / f"col-{path.stem}"
        file_specs(str(path), "events", selected=names, columns=out, step=128)
        with open_input(str(path), "events") as root:
            _same(open_columns(out).arrays(names, 17, 300), root.arrays(names, 17, 300))


def test_failed_specs_leaves_no_staging(tmp_path):
    path = write_events(tmp_path / "a.root", 100)
    out = tmp_path / "col"
    with pytest.raises(BranchError, match="nope"):
        file_specs(str(path), "events", selected=["HT", "nope"], columns=out)
    assert list(tmp_path.iterdir()) == [path]


def test_restaging_replaces_the_folder(tmp_path):
    path = write_events(tmp_path / "a.root", 100)
    out = tmp_path / "col"
    file_specs(str(path), "events", selected=["HT", "MET"], columns=out)
    file_specs(str(path), "events", selected=["HT"], columns=out)
    assert open_columns(out).names == ["HT"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.root", "col"]


# ---------------------------------------------------------------- refused stagings


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


def test_truncated_array_is_refused(staged, tmp_path):
    folder = _copy(staged[1][0], tmp_path)
    victim = folder / json.loads((folder / MANIFEST).read_text())["branches"]["Jet_pt"]["values"]
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(LayoutError, match=rf"(?s){victim.name} holds .* bytes.*damaged.*rerun"):
        open_columns(folder)


@pytest.fixture(scope="module")
def big_staging(tmp_path_factory):
    """A staging whose arrays span several checksum blocks."""
    d = tmp_path_factory.mktemp("big-columns")
    path = write_events(d / "big.root", 40_000, seed=5, basket=7_000)
    file_specs(str(path), "events", identifiers=IDS, columns=d / "col", step=9_999)
    return path, d / "col"


@pytest.mark.parametrize(("start", "stop"), [(0, 40_000), (8_191, 8_193), (16_000, 33_000)])
def test_ranges_across_checksum_blocks_equal_the_root_file(big_staging, start, stop):
    path, folder = big_staging
    store = open_columns(folder)
    names = ["HT", "Jet_pt", "nPV", "trigger"]
    with open_input(str(path), "events") as root:
        _same(store.arrays(names, start, stop), root.arrays(names, start, stop))


def test_a_flipped_byte_in_a_staged_array_is_refused_where_it_is_read(big_staging, tmp_path):
    folder = _copy(big_staging[1], tmp_path)
    branch = json.loads((folder / MANIFEST).read_text())["branches"]["HT"]
    victim = folder / branch["values"]
    itemsize = np.dtype(branch["dtype"]).itemsize
    assert victim.stat().st_size > 2 * BLOCK
    data = bytearray(victim.read_bytes())
    data[2 * BLOCK + 5] ^= 0x01
    victim.write_bytes(bytes(data))
    store = open_columns(folder)  # the sizes are right
    first_block = BLOCK // itemsize
    assert len(store.arrays(["HT"], 0, first_block)) == first_block  # block 0 is intact
    with pytest.raises(LayoutError, match=rf"(?s){victim.name} differs .*block 2.*rerun"):
        store.arrays(["HT"], 0, 40_000)
    (folder / f"{victim.name}.xxh3").unlink()
    with pytest.raises(LayoutError, match=r"no complete checksum file"):
        open_columns(folder).arrays(["HT"], 0, 10)


def test_unfinished_staging_is_refused(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(LayoutError, match=r"no columns\.json in .*half.*rerun specs"):
        open_columns(tmp_path / "half")


def test_staging_of_another_file_is_refused(staged, tmp_path):
    _, folders, specs = staged
    layout = merge(specs, Settings(tree="events"), labels=["1", "0"])
    other = write_events(tmp_path / "sig.root", 500, seed=5, signal=True)
    wrong = tmp_path / "col-other"
    file_specs(str(other), "events", identifiers=IDS, columns=wrong)
    with pytest.raises(LayoutError, match=r"(?s)not those of sig.root: 500 entries.*1300.*rerun"):
        preprocess(layout, [0], tmp_path / "shards", columns=[wrong, folders[1]])
    assert not (tmp_path / "shards").exists()


def test_branch_not_staged_is_refused(staged, tmp_path):
    files, _, specs = staged
    narrow = tmp_path / "narrow"
    file_specs(str(files[0]), "events", identifiers=IDS, selected=["HT"], columns=narrow)
    layout = merge(specs, Settings(tree="events"), labels=["1", "0"])
    with pytest.raises(LayoutError, match=r"branch '\w+' was not staged \(staged: HT\)"):
        preprocess(layout, [0], tmp_path / "shards", columns=[narrow])
    assert not (tmp_path / "shards").exists()


def test_two_stagings_of_one_file_are_refused(staged):
    folder = staged[1][0]
    with pytest.raises(LayoutError, match=r"two staging folders for sig\.root"):
        stores_by_basename([folder, folder])


def test_corrupt_basket_mid_scan_leaves_no_staging(tmp_path, monkeypatch):
    from rootml import specs

    monkeypatch.setattr(specs, "STEP_BYTES", 1)  # steps of 1000 entries, not the whole file
    path = write_events(tmp_path / "a.root", 2000, seed=3, basket=200)
    data = bytearray(path.read_bytes())
    with uproot.open(path) as f:  # a basket of HT past the first step
        seek = f["events"]["HT"].member("fBasketSeek")[6]
    data[seek + 100 : seek + 400] = b"\x00" * 300
    path.write_bytes(bytes(data))
    with pytest.raises(InputFileError, match=r"(?s)entries 1000-2000.*truncated or corrupt"):
        file_specs(str(path), "events", identifiers=IDS, columns=tmp_path / "col", step=1000)
    assert list(tmp_path.iterdir()) == [path]


def test_staging_many_branches_needs_few_open_files(tmp_path):
    """A NanoAOD file has over a thousand branches: staging must not hold a file open per
    branch (the usual limit is 1024). Here: 150 jagged branches under a limit of 64 files."""
    counts = np.arange(200) % 4
    jet = ak.zip(
        {f"f{i}": ak.unflatten(np.full(counts.sum(), i, np.float32), counts) for i in range(150)}
    )
    path = write_tree(tmp_path / "wide.root", {"Jet": jet}, basket=50)
    code = (
        "import resource, sys; from rootml.specs import file_specs; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64)); "
        "file_specs(sys.argv[1], 'events', columns=sys.argv[2], step=50)"
    )
    out = tmp_path / "col"
    subprocess.run([sys.executable, "-c", code, str(path), str(out)], check=True, timeout=120)
    store = open_columns(out)
    assert len([n for n in store.names if n.startswith("Jet_")]) == 150
    assert ak.to_list(store.arrays(["Jet_f149"], 0, 4)["Jet_f149"]) == [
        [],
        [149],
        [149, 149],
        [149] * 3,
    ]


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_staging_never_replaces_other_files(tmp_path, kind):
    path = write_events(tmp_path / "a.root", 50)
    out = tmp_path / "results"
    if kind == "folder":
        out.mkdir()
        (out / "thesis.tex").write_text("precious")
    else:
        out.write_text("precious")
    with pytest.raises(ConfigError, match=r"results: it exists and is not an earlier staging"):
        file_specs(str(path), "events", selected=["HT"], columns=out)
    kept = out / "thesis.tex" if kind == "folder" else out
    assert kept.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.root", "results"]


@pytest.mark.parametrize("policy", ["drop", "replace"])
def test_nan_policies_give_the_same_shards_from_columns(tmp_path, policy):
    arrays = event_arrays(400, 9)
    met = arrays["MET"].copy()
    met[[0, 7, 399]] = np.nan
    jet_pt = ak.to_numpy(ak.flatten(arrays["Jet"].pt)).copy()
    jet_pt[[2, 50]] = np.inf
    arrays["MET"] = met
    arrays["Jet"] = ak.zip(
        {"pt": ak.unflatten(jet_pt, ak.num(arrays["Jet"])), "eta": arrays["Jet"].eta}
    )
    owner = np.repeat(np.arange(400), ak.to_numpy(ak.num(arrays["Jet"])))
    bad = {0, 7, 399} | {int(owner[2]), int(owner[50])}  # events holding a NaN or an inf
    paths = [write_tree(tmp_path / "nan.root", arrays), write_events(tmp_path / "b.root", 300)]
    folders = [tmp_path / "c0", tmp_path / "c1"]
    specs = [
        file_specs(str(p), "events", identifiers=IDS, columns=c)
        for p, c in zip(paths, folders, strict=True)
    ]
    layout = merge(specs, Settings(tree="events", nan_policy=policy), labels=["1", "0"])
    [a] = preprocess(layout, [0], tmp_path / "root.h5")
    [b] = preprocess(layout, [0], tmp_path / "staged.h5", columns=folders)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert fa["x"].shape[0] == (400 if policy == "replace" else 400 - len(bad))
        for key in fa:
            assert np.array_equal(fa[key][...], fb[key][...]), key
