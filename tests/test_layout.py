"""The layout document: its digest, validation, and the names it had before 0.2."""

from __future__ import annotations

import json
import logging

import pytest
from rootfiles import write_events

from rootml.config import Settings
from rootml.exceptions import LayoutError
from rootml.layout import (
    LAYOUT_FILE,
    OLD_LAYOUT_FILE,
    digest_of,
    layout_in,
    load_layout,
    write_layout,
)
from rootml.merging import merge
from rootml.specs import file_specs


@pytest.fixture(scope="module")
def specs3(tmp_path_factory):
    d = tmp_path_factory.mktemp("layout")
    paths = [write_events(d / f"{n}.root", 300, seed=i, signal=i == 0) for i, n in enumerate("abc")]
    return [file_specs(str(p), "events", identifiers=("run", "event")) for p in paths]


def _settings(**kw):
    return Settings(tree="events", **kw)


def test_digest_round_trip_and_tamper_detection(specs3, tmp_path):
    doc = merge(specs3[:2], _settings(), labels=["1", "0"])
    again = merge(specs3[:2], _settings(), labels=["1", "0"])
    assert doc["digest"] == again["digest"]
    other = merge(specs3[:2], _settings(seed=7), labels=["1", "0"])
    assert other["digest"] != doc["digest"]
    path = write_layout(tmp_path / "layout.json", doc)
    assert load_layout(path) == doc
    tampered = json.loads(path.read_text())
    tampered["inputs"][0]["scale"] *= 2
    path.write_text(json.dumps(tampered))
    with pytest.raises(LayoutError, match="does not match its content"):
        load_layout(path)


def test_a_layout_from_before_0_2_is_found_under_its_old_name(specs3, tmp_path):
    doc = merge(specs3[:2], _settings(), labels=["1", "0"])
    write_layout(tmp_path / OLD_LAYOUT_FILE, doc)
    assert layout_in(tmp_path) == tmp_path / OLD_LAYOUT_FILE
    assert load_layout(layout_in(tmp_path)) == doc
    write_layout(tmp_path / LAYOUT_FILE, doc)
    assert layout_in(tmp_path) == tmp_path / LAYOUT_FILE  # the new name wins
    assert layout_in(tmp_path / "none") == tmp_path / "none" / LAYOUT_FILE  # what is missing


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"layout_digest": "new"}, "new"),
        ({"specs_digest": "old"}, "old"),
        ({"layout_digest": "new", "specs_digest": "old"}, "new"),
        ({}, None),
    ],
)
def test_digest_of_reads_both_spellings(doc, expected):
    assert digest_of(doc) == expected


def test_old_option_spellings_still_work_with_a_warning(specs3, tmp_path, caplog):
    """--specs, --max-batches, --val/--test: kept for one release, each with a warning."""
    from rootml.cli import main

    for i, s in enumerate(specs3[:2]):
        (tmp_path / f"s{i}.json").write_text(json.dumps(s))
    argv = ["merge", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"), "--labels", "1,0"]
    argv += ["--tree", "events", "--identifiers", "run,event"]
    new, out = tmp_path / "new.json", tmp_path / "layout.json"
    assert main([*argv, "--out", str(new), "--val-fraction", "0.1", "--test-fraction", "0.3"]) == 0
    with caplog.at_level(logging.WARNING, logger="rootml"):
        assert main([*argv, "--out", str(out), "--val", "0.1", "--test", "0.3", "--max-batches",
                     "2", "--batches", str(tmp_path / "b.yml")]) == 0  # fmt: skip
    said = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert said == [
        "--val is deprecated and goes in 0.3: use --val-fraction",
        "--test is deprecated and goes in 0.3: use --test-fraction",
        "--max-batches is deprecated and goes in 0.3: use --jobs",
    ]
    assert json.loads(out.read_text())["split"] == json.loads(new.read_text())["split"]
    assert json.loads(out.read_text())["digest"] == json.loads(new.read_text())["digest"]
    with pytest.raises(SystemExit):  # one spelling at a time
        main(
            ["preprocess", "--layout", str(out), "--specs", str(out), "--chunk", "0", "--out", "x"]
        )
