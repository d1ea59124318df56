from __future__ import annotations

import json
import math

import pytest

from rootml.config import (
    Inputs,
    Settings,
    load_input,
    load_mlaas4hep,
    load_params,
    parse_labels,
    read_list_file,
)
from rootml.exceptions import ConfigError, SchemaValidationError


def _params(tmp_path, **params):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    return path


def test_every_mlaas4hep_key_is_honoured(tmp_path):
    (tmp_path / "skip.txt").write_text("Muon_pt\n# comment\nnMuon\n")
    fields = load_params(
        _params(
            tmp_path,
            nevts=5000,
            shuffle=False,
            chunk_size=2000,
            epochs=3,
            batch_size=64,
            identifier="run,event",
            branch="Events",
            selected_branches="HT, Jet_pt,MET",
            exclude_branches="skip.txt",
            redirector="root://xrd.example",
            verbose=1,
            split=0.25,
            nan=-5.0,
            hist="pdfs",
        )
    )
    s = Settings(**fields)
    assert s.nevts == 5000
    assert s.shuffle is False
    assert s.chunk_size == 2000
    assert (s.epochs, s.batch_size) == (3, 64)
    assert s.identifiers == ("run", "event")  # a list of names, not a substring test
    assert s.selected == ("HT", "Jet_pt", "MET")  # names, not characters
    assert s.exclude == ("Muon_pt", "nMuon")
    assert s.redirector == "root://xrd.example"
    assert s.test_fraction == 0.25
    assert s.val_fraction == pytest.approx(0.15)
    assert s.pad_value == -5.0
    assert s.hist == "pdfs"


def test_unknown_key_named_with_closest(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"unknown params.json key 'chunksize' \(closest known: 'chunk_size'(.|\n)*in file .*params.json",
    ):
        load_params(_params(tmp_path, chunksize=100))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"nevts": "all"}, "'nevts' must be an integer"),
        ({"selected_branches": 3}, "'selected_branches' must be a list"),
        ({"shuffle": "yes"}, "'shuffle' must be true or false"),
        ({"hist": "plots"}, "'hist' must be \"pdfs\""),
        ({"split": 1.5}, "split fractions"),
        ({"nan": "NaN"}, "must be a finite number"),
        ({"chunk_size": 0}, "chunk_size must be"),
    ],
)
def test_bad_values_rejected(tmp_path, params, match):
    with pytest.raises(ConfigError, match=match):
        Settings(**load_params(_params(tmp_path, **params)))


def test_nan_padding_rejected_explicitly():
    with pytest.raises(ConfigError, match="finite number outside the scaled range"):
        Settings(pad_value=math.nan)


def test_list_files(tmp_path):
    f = tmp_path / "files.txt"
    f.write_text("# inputs\n a.root \n\nroot://host//b.root  # remote\n")
    assert read_list_file(f) == ["a.root", "root://host//b.root"]
    root = tmp_path / "x.root"
    root.write_bytes(b"root\x00\x00binary")
    with pytest.raises(ConfigError, match=r"binary .*ROOT.* not a text list"):
        read_list_file(root)


def test_inputs_checks():
    with pytest.raises(ConfigError, match="file list is empty"):
        Inputs((), ("1",), None)
    with pytest.raises(ConfigError, match="1 labels for 2 files"):
        Inputs(("a.root", "b.root"), ("1",), None)
    with pytest.raises(ConfigError, match=r"same file name 'a\.root'"):
        Inputs(("x/a.root", "root://h//y/a.root"), ("1", "0"), None)


def test_labels_from_branch_or_per_file():
    assert parse_labels(["1", "0"], 2) == (("1", "0"), None)
    assert parse_labels(["isSignal"], 2) == (None, "isSignal")
    assert parse_labels(["branch:isSignal"], 1) == (None, "isSignal")
    assert parse_labels(["1"], 1) == (("1",), None)


def test_mlaas4hep_folder(tmp_path):
    (tmp_path / "files.txt").write_text("a.root\nb.root\n")
    (tmp_path / "labels.txt").write_text("1\n0\n")
    _params(tmp_path, branch="events", nevts=-1)
    inputs, settings = load_mlaas4hep(
        str(tmp_path / "files.txt"), str(tmp_path / "labels.txt"), tmp_path / "params.json"
    )
    assert inputs.files == ("a.root", "b.root")
    assert inputs.labels == ("1", "0")
    assert inputs.search_dirs == (str(tmp_path.resolve()),)
    assert settings.tree == "events"


def test_input_yml(tmp_path):
    (tmp_path / "files.txt").write_text("a.root\nb.root\n")
    (tmp_path / "params.json").write_text(json.dumps({"chunk_size": 5, "epochs": 2}))
    (tmp_path / "input.yml").write_text(
        "files: files.txt\nlabels: [1, 0]\nparams: params.json\ntree: events\nseed: 9\n"
        "data: {nevts: 100, split: {val: 0.1, test: 0.3}}\n"
        "features: {scaling: standard, jagged_cap: p99.9, jagged_caps: {Jet: 4}, counts: true}\n"
        "training: {epochs: 7}\n"
    )
    inputs, s = load_input(tmp_path / "input.yml")
    assert inputs.labels == ("1", "0")
    assert (s.chunk_size, s.epochs, s.seed, s.nevts) == (5, 7, 9, 100)
    assert (s.val_fraction, s.test_fraction) == (0.1, 0.3)
    assert s.jagged_cap == "p99.9"
    assert s.jagged_caps == {"Jet": 4}
    assert s.counts is True


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("files: [a.root]\nlabels: [1]\nfeatures: {scaling: log}\n", r"key 'features/scaling'"),
        ("files: [a.root]\nlabels: [1]\nchunk: 3\n", r"Additional properties.*'chunk'"),
        ("labels: [1]\n", r"'files' is a required property"),
        ("files: [a.root]\nlabels: [1]\nfeatures: {jagged_cap: 99}\n", None),
        ("files: [a.root, b.root]\nlabels: [1]\n", "1 labels for 2 files"),
    ],
)
def test_input_yml_errors(tmp_path, text, match):
    path = tmp_path / "input.yml"
    path.write_text(text)
    if match is None:
        load_input(path)  # an integer cap is valid
        return
    with pytest.raises((SchemaValidationError, ConfigError), match=match):
        load_input(path)
