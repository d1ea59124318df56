"""MLaaS4HEP's preproc.json, read as it is: its cuts and new branches become rootml's selection
and new variables, its removed branches leave the features, and every key is honoured or
refused by name."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import uproot
from rootfiles import write_events

from rootml.config import Settings, with_preproc
from rootml.exceptions import ConfigError
from rootml.merging import merge
from rootml.preproc import load_preproc, translate
from rootml.specs import file_specs
from rootml.workflow.inputs import from_mlaas4hep

#: the example of MLaaS4HEP's doc/preproc.md (branch uproot4)
EXAMPLE = {
    "new_branch": {
        "log_partonE": {
            "def": "log(partonE)",
            "type": "jagged",
            "cut_1": ["log_partonE<6.31", "any"],
            "cut_2": ["log_partonE>5.85", "all"],
            "remove": "False",
            "keys_to_remove": ["partonE"],
        },
        "nJets_square": {
            "def": "nJets**2",
            "type": "flat",
            "cut": "1<=nJets_square<=16",
            "remove": "False",
            "keys_to_remove": ["nJets"],
        },
    },
    "flat_cut": {"nLeptons": {"cut": "0<=nLeptons<=2", "remove": "False"}},
    "jagged_cut": {"partonPt": {"cut": ["partonPt>200", "all"], "remove": "False"}},
}


def test_the_documented_example_translates_cut_by_cut():
    derived, exclude = translate(EXAMPLE)
    assert derived["new_variables"] == {"log_partonE": "log(partonE)", "nJets_square": "nJets**2"}
    assert derived["selection"] == (
        "(any(log_partonE<6.31)) & (all(log_partonE>5.85)) & (1<=nJets_square<=16) & "
        "(0<=nLeptons<=2) & (all(partonPt>200))"
    )
    assert exclude == ("partonE", "nJets")


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (
            {"new_branchs": {}},
            r"unknown key 'new_branchs' in preproc\.json \(closest: 'new_branch'",
        ),
        ({"flat_cut": {"HT": {"cutt": "HT>1"}}}, r"unknown key 'cutt' in flat_cut\.HT"),
        ({"jagged_cut": {"Jet_pt": {"cut": "Jet_pt>30"}}}, r"\[cut, 'any' \| 'all'\]"),
        ({"flat_cut": {"HT": {"cut": "HT>1", "remove": "yes"}}}, r'remove must be "True"'),
        ({"flat_cut": {"HT": {"remove": "True"}}}, r"flat_cut\.HT has no 'cut'"),
        ({"new_branch": {"x": {"type": "flat"}}}, r"new_branch\.x needs 'def'"),
        (
            {"new_branch": {"x": {"def": "HT", "type": "vector"}}},
            r"type must be 'flat' or 'jagged'",
        ),
    ],
    ids=["section", "cut-key", "jagged-form", "remove", "no-cut", "no-def", "type"],
)
def test_every_key_is_honoured_or_refused_by_name(doc, match):
    with pytest.raises(ConfigError, match=match):
        translate(doc)


def test_a_file_that_is_not_json_names_itself(tmp_path):
    bad = tmp_path / "preproc.json"
    bad.write_text("{'new_branch': }")
    with pytest.raises(ConfigError, match=r"not JSON(.|\n)*in file .*preproc\.json"):
        load_preproc(bad)


def test_preproc_json_runs_through_specs_and_merge(tmp_path):
    files = [
        write_events(tmp_path / "s.root", 2000, 1, signal=True),
        write_events(tmp_path / "b.root", 2000, 2),
    ]
    (tmp_path / "preproc.json").write_text(
        json.dumps(
            {
                "new_branch": {"log_HT": {"def": "log(HT)", "type": "flat", "cut": "log_HT > 4"}},
                "jagged_cut": {"Jet_pt": {"cut": ["Jet_pt>30", "any"], "remove": "False"}},
                "flat_cut": {"MET": {"cut": "MET>5", "remove": "True"}},
            }
        )
    )
    settings = with_preproc(Settings(tree="events"), tmp_path / "preproc.json")
    ids = ("run", "event", "luminosityBlock")
    specs = [
        file_specs(
            str(f), "events", identifiers=ids, exclude=settings.exclude, derived=settings.derived
        )
        for f in files
    ]
    a = uproot.open(files[0])["events"].arrays(["HT", "MET", "Jet_pt"])
    with np.errstate(divide="ignore"):  # HT = 0: log is -inf, and the cut drops it
        log_ht = np.log(np.asarray(a.HT))
    keep = (log_ht > 4) & np.asarray(ak.any(a.Jet_pt > 30, axis=1)) & (np.asarray(a.MET) > 5)
    assert specs[0]["cutflow"]["events passing"] == int(keep.sum())
    layout = merge(
        specs,
        Settings(
            tree="events", exclude=settings.exclude, identifiers=ids, derived=settings.derived
        ),
        labels=["1", "0"],
    )
    branches = {c["branch"] for c in layout["inputs"]}
    assert "log_HT" in branches
    assert "MET" not in branches  # removed after its cut: read, not a feature
    assert "MET" in layout["read"]
    with pytest.raises(ConfigError, match="keep one of them"):
        with_preproc(settings, tmp_path / "preproc.json")


def test_an_mlaas4hep_folder_brings_its_preproc_json(tmp_path):
    (tmp_path / "files.txt").write_text("a.root\nb.root\n")
    (tmp_path / "labels.txt").write_text("1\n0\n")
    (tmp_path / "params.json").write_text(json.dumps({"exclude_branches": ["nPV"]}))
    (tmp_path / "preproc.json").write_text(
        json.dumps({"flat_cut": {"MET": {"cut": "MET>5", "remove": "True"}}})
    )
    doc, _ = from_mlaas4hep(tmp_path)
    assert doc["selection"] == "MET>5"
    assert doc["features"] == {"exclude": ["nPV", "MET"]}
