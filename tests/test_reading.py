"""The reading layer: local, file://, HTTP and XRootD inputs, and every way an input is bad."""

from __future__ import annotations

import http.client
import re
import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from servers import parse_ranges

from rootml.exceptions import BranchError, ConfigError, InputFileError, TreeNotFoundError
from rootml.reading import FLAT, JAGGED, UNSUPPORTED, open_input
from rootml.sources import resolve

TTREE_FEATURES = ["met", "njet", "Jet_pt", "Jet_eta", "p3"]
RNTUPLE_FEATURES = ["met", "Jet.pt", "Jet.eta"]


def _read_all(source: str | Path, names: list[str]) -> ak.Array:
    with open_input(str(source), "events") as events:
        return events.arrays(names)


def test_ttree_branches_are_classified(events_ttree):
    with open_input(str(events_ttree), "events") as events:
        assert events.format == "TTree"
        assert events.entries == 500
        kinds = {name: (info.kind, info.dtype) for name, info in events.branches.items()}
        p3 = events.branches["p3"]
        m2 = events.branches["m2"]
        jet_pt = events.branches["Jet_pt"]
    assert kinds["met"] == (FLAT, "float32")
    assert kinds["njet"] == (FLAT, "int32")
    assert kinds["Jet_pt"] == (JAGGED, "float32")
    assert kinds["Jet_eta"] == (JAGGED, "float32")
    assert jet_pt.collection == "Jet"
    assert (p3.kind, p3.fixed_length) == (JAGGED, 3)
    assert m2.kind == UNSUPPORTED
    assert "fixed" in m2.reason


def test_rntuple_fields_are_classified_with_leaves(events_rntuple):
    with open_input(str(events_rntuple), "events") as events:
        assert events.format == "RNTuple"
        assert events.entries == 500
        branches = events.branches
    assert branches["met"].kind == FLAT
    assert (branches["Jet.pt"].kind, branches["Jet.pt"].collection) == (JAGGED, "Jet")
    assert (branches["Jet.eta"].kind, branches["Jet.eta"].dtype) == (JAGGED, "float32")
    assert "Jet" not in branches  # the record itself is exposed only through its leaves
    assert branches["hits"].kind == UNSUPPORTED
    assert "vector of vectors" in branches["hits"].reason
    assert branches["label"].kind == UNSUPPORTED
    assert "string" in branches["label"].reason


def test_ranges_and_iteration_match_one_full_read(events_ttree):
    with open_input(str(events_ttree), "events") as events:
        full = events.arrays(TTREE_FEATURES)
        middle = events.arrays(TTREE_FEATURES, 120, 250)
        pieces = list(events.iterate(TTREE_FEATURES, step=150))
    assert len(full) == 500
    assert middle.fields == TTREE_FEATURES
    assert ak.array_equal(middle, full[120:250])
    assert [start for start, _ in pieces] == [0, 150, 300, 450]
    assert ak.array_equal(ak.concatenate([chunk for _, chunk in pieces]), full)


def test_rntuple_leaves_hold_the_same_values_as_ttree_branches(events_ttree, events_rntuple):
    # both files come from the same seed, so the jets are the same
    tree = _read_all(events_ttree, ["met", "Jet_pt", "Jet_eta"])
    ntuple = _read_all(events_rntuple, RNTUPLE_FEATURES)
    assert ak.array_equal(ntuple["met"], tree["met"])
    assert ak.array_equal(ntuple["Jet.pt"], tree["Jet_pt"])
    assert ak.array_equal(ntuple["Jet.eta"], tree["Jet_eta"])
    assert ak.num(ntuple["Jet.pt"], axis=1).tolist() == ak.num(tree["Jet_pt"], axis=1).tolist()


def test_file_url_reads_like_the_path(events_ttree):
    url = events_ttree.resolve().as_uri()
    assert url.startswith("file:///")
    with open_input(url, "events") as events:
        assert events.path == str(events_ttree.resolve())
        got = events.arrays(TTREE_FEATURES)
    assert ak.array_equal(got, _read_all(events_ttree, TTREE_FEATURES))


@pytest.mark.network
@pytest.mark.parametrize(
    ("kind", "names"), [("ttree", TTREE_FEATURES), ("rntuple", RNTUPLE_FEATURES)]
)
def test_http_reads_equal_local(http_server, request, kind, names):
    local = request.getfixturevalue(f"events_{kind}")
    shutil.copy(local, http_server.root / "events.root")
    url = http_server.url("events.root")
    with open_input(url, "events") as events:
        assert events.path == url
        assert events.entries == 500
        remote = events.arrays(names)
        part = events.arrays(names, 10, 40)
    expected = _read_all(local, names)
    assert ak.array_equal(remote, expected)
    assert ak.array_equal(part, expected[10:40])
    ranges = [r for method, _, r in http_server.requests if method == "GET"]
    assert all(r and r.startswith("bytes=") for r in ranges)  # never the whole file
    if kind == "ttree":  # uproot asks for a TTree's baskets in one multi-range request
        assert any("," in r for r in ranges)


@pytest.mark.network
def test_http_missing_file_names_the_url(http_server):
    url = http_server.url("nowhere.root")
    with pytest.raises(InputFileError, match=rf"no such file\nin file {re.escape(url)}$"):
        open_input(url, "events")


@pytest.mark.network
@pytest.mark.parametrize(
    ("kind", "names"), [("ttree", TTREE_FEATURES), ("rntuple", RNTUPLE_FEATURES)]
)
def test_xrootd_reads_equal_local(xrootd_server, request, kind, names):
    local = request.getfixturevalue(f"events_{kind}")
    target = xrootd_server.root / f"reading-{kind}.root"
    shutil.copy(local, target)
    url = xrootd_server.url(target.name)
    assert url.startswith(f"root://127.0.0.1:{xrootd_server.port}//")
    with open_input(url, "events") as events:
        remote = events.arrays(names)
        part = events.arrays(names, 490)
    expected = _read_all(local, names)
    assert ak.array_equal(remote, expected)
    assert ak.array_equal(part, expected[490:])


@pytest.mark.network
def test_xrootd_missing_file_names_the_url(xrootd_server):
    url = xrootd_server.url("nowhere.root")
    with pytest.raises(InputFileError, match=rf"(?s)no such file.*\nin file {re.escape(url)}$"):
        open_input(url, "events")


# ---------------------------------------------------------------------------------------------
# bad inputs: one case per failure mode, each message naming the file
#
# A case returns (name, tree, branches to read, error class, message regex, what the message
# must name); "\nin file PATH" is checked whenever the file exists.


def _not_root(tmp_path, _request):
    path = tmp_path / "files.txt"
    path.write_text("/store/data/a.root\n/store/data/b.root\n")
    return str(path), "events", None, InputFileError, "cannot open as a ROOT file", str(path)


def _truncated(tmp_path, request):
    path = tmp_path / "truncated.root"
    data = request.getfixturevalue("events_ttree").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path), "events", TTREE_FEATURES, InputFileError, "truncated or corrupt", str(path)


def _truncated_rntuple(tmp_path, request):
    path = tmp_path / "truncated_rntuple.root"
    data = request.getfixturevalue("events_rntuple").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    names = RNTUPLE_FEATURES
    return str(path), "events", names, InputFileError, "truncated or corrupt", str(path)


def _missing_tree(_tmp_path, request):
    events = request.getfixturevalue("events_ttree")
    message = r"no TTree or RNTuple named 'Events'; trees in the file: 'events' \(TTree\)"
    return str(events), "Events", None, TreeNotFoundError, message, str(events)


def _missing_branch(_tmp_path, request):
    events = request.getfixturevalue("events_ttree")
    message = r"branch 'Jet_ptt' is not in TTree 'events' \(closest: 'Jet_pt'"
    return str(events), "events", ["met", "Jet_ptt"], BranchError, message, str(events)


def _unsupported_branch(_tmp_path, request):
    events = request.getfixturevalue("events_ttree")
    message = r"branch 'm2' cannot be used: nested fixed-size arrays"
    return str(events), "events", ["m2"], BranchError, message, str(events)


def _missing_local(tmp_path, _request):
    path = str(tmp_path / "typo.root")
    return path, "events", None, InputFileError, "does not exist", path


def _missing_relative(_tmp_path, _request):
    name = "no/such/dir/typo.root"
    return name, "events", None, InputFileError, "does not exist", name


def _lfn_without_redirector(_tmp_path, _request):
    name = "/store/mc/Run3/sample/file.root"
    message = "looks like a logical file name.*no redirector is set"
    return name, "events", None, InputFileError, message, name


def _empty(_tmp_path, _request):
    return "   ", "events", None, ConfigError, "an input file name is empty", "blank entry"


def _bad_scheme(_tmp_path, _request):
    name = "s3://bucket/file.root"
    return name, "events", None, ConfigError, "unsupported URL scheme 's3'", name


def _url_without_host(_tmp_path, _request):
    name = "root:///store/file.root"
    return name, "events", None, ConfigError, "has no host", name


@pytest.mark.parametrize(
    "case",
    [
        _not_root,
        _truncated,
        _truncated_rntuple,
        _missing_tree,
        _missing_branch,
        _unsupported_branch,
        _missing_local,
        _missing_relative,
        _lfn_without_redirector,
        _empty,
        _bad_scheme,
        _url_without_host,
    ],
    ids=lambda case: case.__name__.lstrip("_"),
)
def test_bad_input_fails_naming_the_file(case, tmp_path, request, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative names must not find anything by accident
    name, tree, names, error, message, where = case(tmp_path, request)
    with pytest.raises(error, match=message) as info, open_input(name, tree) as events:
        events.arrays(names or [])
    text = str(info.value)
    assert type(info.value) is error
    assert where in text, f"the message does not name {where!r}:\n{text}"
    if Path(where).is_file():
        assert text.endswith(f"\nin file {Path(where).resolve()}")  # on its own line, last
    assert ",;" not in text
    assert ",\n" not in text


def test_lfn_with_redirector_resolves_to_the_redirector():
    source = resolve("/store/mc/Run3/file.root", redirector="root://xrd.example.org:1094/")
    assert source.url == "root://xrd.example.org:1094//store/mc/Run3/file.root"
    assert source.scheme == "root"
    assert source.remote
    assert source.original == "/store/mc/Run3/file.root"
    assert source.basename == "file.root"


# ---------------------------------------------------------------------------------------------
# the loopback HTTP server the remote tests read through speaks the range protocol uproot uses


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", [(0, 10)]),
        ("bytes=90-", [(90, 100)]),
        ("bytes=-10", [(90, 100)]),
        ("bytes=-500", [(0, 100)]),
        ("bytes=95-200", [(95, 100)]),
        ("bytes=0-0, 50-59", [(0, 1), (50, 60)]),
        ("bytes=100-", []),
        ("bytes=-0", []),
        ("bytes=5-1", None),
        ("items=0-1", None),
        ("bytes=a-b", None),
    ],
)
def test_http_server_range_parsing(header, expected):
    assert parse_ranges(header, 100) == expected


@pytest.mark.network
def test_http_server_head_ranges_and_errors(http_server):
    body = bytes(range(256)) * 4
    (http_server.root / "blob.bin").write_bytes(body)
    path = "/blob.bin"
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=5)
    try:

        def ask(method, headers=None, target=path):
            conn.request(method, target, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()

        status, headers, data = ask("HEAD")
        assert (status, headers["Content-Length"], headers["Accept-Ranges"], data) == (
            200,
            "1024",
            "bytes",
            b"",
        )
        status, headers, data = ask("GET", {"Range": "bytes=-24"})
        assert (status, headers["Content-Range"], data) == (206, "bytes 1000-1023/1024", body[-24:])
        status, headers, data = ask("GET", {"Range": "bytes=10-19,1020-"})
        assert status == 206
        assert headers["Content-Type"].startswith("multipart/byteranges; boundary=")
        assert b"Content-Range: bytes 10-19/1024\r\n\r\n" + body[10:20] in data
        assert b"Content-Range: bytes 1020-1023/1024\r\n\r\n" + body[1020:] in data
        status, headers, _ = ask("GET", {"Range": "bytes=2000-"})
        assert (status, headers["Content-Range"]) == (416, "bytes */1024")
        assert ask("GET", target="/../etc/passwd")[0] == 404
        assert ask("GET")[2] == body
    finally:
        conn.close()


# ------------------------------------------------------------------ split objects, TNtuple, records

DATA = Path(__file__).parent / "data"  # files written by ROOT (see data/README.md)


def test_a_tclonesarray_collection_is_read_leaf_by_leaf_as_uproot_reads_it():
    path = DATA / "uproot-issue213.root"
    with open_input(str(path), "T") as events:
        branches = events.branches
        energy = events.arrays(["fMCHits.fEneDep", "eventPack.fMCHits", "eventPack.fEvtIndex"])
    import uproot

    with uproot.open(path) as f:
        tree = f["T"]
        expected = tree["eventPack/fMCHits/fMCHits.fEneDep"].array()
        counts = tree["eventPack/fMCHits"].array()
    assert (branches["fMCHits.fEneDep"].kind, branches["fMCHits.fEneDep"].collection) == (
        JAGGED,
        "fMCHits",
    )
    assert branches["eventPack.fMCHits"].counter_of == "eventPack.fMCHits"  # the object count
    assert branches["eventPack.fEvtIndex"].kind == FLAT  # a plain member of the split class
    assert branches["fMCHits.fPosition"].kind == UNSUPPORTED  # TVector3 objects
    assert "pointer" in branches["eventPack.fGenInfo"].reason
    assert ak.all(energy["fMCHits.fEneDep"] == expected)
    assert ak.all(ak.num(energy["fMCHits.fEneDep"]) == energy["eventPack.fMCHits"])
    assert ak.all(energy["eventPack.fMCHits"] == counts)


def test_a_fully_split_class_gives_its_members_under_dotted_names():
    path = DATA / "uproot-small-evnt-tree-fullsplit.root"
    with open_input(str(path), "tree") as events:
        branches = events.branches
        got = events.arrays(["evt.I16", "evt.ArrayF32[10]", "evt.SliceF64", "P3.Px", "evt.N"])
    import uproot

    with uproot.open(path) as f:
        tree = f["tree"]
        slices = tree["evt/SliceF64"].array()
        px = tree["evt/P3/P3.Px"].array()
    assert branches["evt.I16"].kind == FLAT
    assert (branches["evt.ArrayF32[10]"].kind, branches["evt.ArrayF32[10]"].fixed_length) == (
        JAGGED,
        10,
    )
    # a member vector is its own collection: the struct's vectors differ in length
    assert branches["evt.SliceF64"].collection == "evt.SliceF64"
    assert branches["evt.StlVecF32"].collection == "evt.StlVecF32"
    assert branches["evt.Str"].kind == UNSUPPORTED
    assert ak.all(got["evt.SliceF64"] == slices)
    assert ak.all(ak.num(got["evt.SliceF64"]) == got["evt.N"])
    assert ak.all(got["P3.Px"] == px)


def test_an_rntuple_record_field_gives_its_leaves(tmp_path):
    import uproot

    n = 20
    columns = ak.Array(
        {
            "met": np.arange(n, dtype=np.float32),
            "three_LV": ak.zip({"pt": np.arange(n, dtype=np.float32) * 2, "eta": np.ones(n)}),
        }
    )
    with uproot.recreate(tmp_path / "rec.root") as f:
        f.mkrntuple("events", columns)
    with open_input(str(tmp_path / "rec.root"), "events") as events:
        assert set(events.branches) == {"met", "three_LV.pt", "three_LV.eta"}
        got = events.arrays(["three_LV.pt"])
    assert got["three_LV.pt"].to_list() == [2.0 * i for i in range(n)]


class _FileListing:
    """What ``_trees`` asks of an opened file: uproot cannot write a TNtuple (ROOT can), so
    the class names of a file holding one are given here as uproot reports them."""

    file_path = "ntuple.root"

    def classnames(self, recursive: bool = True) -> dict[str, str]:  # noqa: ARG002
        return {"ntuple;1": "TNtuple", "dir/tnd;1": "TNtupleD", "h;1": "TH1F"}


def test_a_tntuple_is_a_tree():
    from rootml.reading import _trees

    assert _trees(_FileListing()) == {"ntuple": "TTree", "dir/tnd": "TTree"}


def test_steps_grow_to_the_byte_target_on_tiny_entries_and_read_every_entry(tmp_path):
    import uproot

    n = 200_000
    with uproot.recreate(tmp_path / "tiny.root") as f:
        f["events"] = {"k": np.arange(n, dtype=np.int32)}
    with open_input(str(tmp_path / "tiny.root"), "events") as events:
        fixed = [len(a) for _, a in events.iterate(["k"], 1000)]
        grown = list(events.iterate(["k"], 1000, target_bytes=400_000))
        starts = set(events._cluster_starts().tolist())
    assert fixed == [1000] * 200
    sizes = [len(a) for _, a in grown]
    # the first step from the field's type (4 bytes an entry: 400 kB is 100k entries), not
    # the 1000 given, and no step ends inside a cluster (here one, of all 200k entries)
    assert sizes[0] >= 100_000
    assert {lo + size for (lo, _), size in zip(grown, sizes, strict=True)} <= starts
    assert sum(sizes) == n
    assert np.array_equal(np.concatenate([a["k"].to_numpy() for _, a in grown]), np.arange(n))
