"""Seeded example data: a signal and a background ROOT file shaped like a CMS NanoAOD flat tree,
plus a ready ``inputs/`` folder in MLaaS4HEP's form (``files.txt``, ``labels.txt``,
``params.json``, ``model.py``) and rootml's own ``input.yml``.

The physics is a caricature with the right shapes: signal (ttH-like) has more jets, harder jets,
more b-tagged jets, more prompt isolated leptons and more genuine missing momentum than the
background (W+jets/QCD-like), but both overlap strongly, so a small network separates them
well but not perfectly (ROC AUC 0.80-0.85 for a 16-unit MLP or boosted trees). Multiplicities
are over-dispersed Poisson counts with a rare "busy event" tail, and continuous variables have
power-law or exponential tails.

Events are generated and written in blocks of ``basket_events`` (one basket per branch per
block), so memory stays bounded for millions of events. The same ``(seed, events,
signal_fraction, basket_events)`` writes the same arrays, bit for bit.

This module writes ROOT files, so it imports uproot; reading goes through :mod:`rootml.reading`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot
import yaml
from tqdm import tqdm

from . import rucio_sample
from .exceptions import ConfigError

log = logging.getLogger(__name__)

IDENTIFIERS = ("run", "event", "luminosityBlock")
RUNS = (362433, 362434, 362437, 362439)  # events are spread over these, in order
EVENTS_PER_LUMI = 400
MAX_JETS = 40


@dataclass(frozen=True)
class SampleResult:
    """What :func:`make_sample` wrote."""

    files: tuple[Path, ...]  # signal first, then background
    inputs: Path  # the inputs folder (files.txt, labels.txt, params.json, model.py, input.yml)
    entries: tuple[int, ...]  # events per file, in the order of ``files``


@dataclass(frozen=True)
class Process:
    """Shape parameters of one class of events (all energies in GeV)."""

    name: str
    label: int
    jet_mean: float  # mean jet multiplicity before the pileup and busy-event terms
    jet_alpha: float  # Pareto index of the jet pt spectrum above 20 GeV (smaller = harder)
    jet_eta_width: float
    b_fraction: float  # probability that a jet is a b jet (high btagDeepB)
    muon_mean: float
    electron_mean: float
    prompt_fraction: float  # share of leptons that are prompt and isolated
    lepton_scale: float  # median pt above threshold of prompt leptons (lognormal)
    neutrino_scale: float  # mean of the genuine missing momentum


SIGNAL = Process(
    name="signal",
    label=1,
    jet_mean=5.8,
    jet_alpha=2.5,
    jet_eta_width=1.2,
    b_fraction=0.3,
    muon_mean=0.8,
    electron_mean=0.7,
    prompt_fraction=0.9,
    lepton_scale=32.0,
    neutrino_scale=55.0,
)
BACKGROUND = Process(
    name="background",
    label=0,
    jet_mean=3.8,
    jet_alpha=3.0,
    jet_eta_width=1.5,
    b_fraction=0.12,
    muon_mean=0.6,
    electron_mean=0.55,
    prompt_fraction=0.6,
    lepton_scale=24.0,
    neutrino_scale=30.0,
)


def make_sample(
    out: str | Path,
    events: int,
    seed: int = 1,
    *,
    tree: str = "events",
    signal_fraction: float = 0.5,
    basket_events: int = 10_000,
) -> SampleResult:
    """Write ``OUT/signal.root``, ``OUT/background.root`` and ``OUT/inputs/``.

    ``events`` is the total over both files, split by ``signal_fraction`` (each file gets at
    least one event). Each file holds a TTree ``tree`` written in baskets of ``basket_events``
    events. Files are written under temporary names and renamed when complete.
    """
    _check_arguments(out, events, seed, tree, signal_fraction, basket_events)
    out, events = Path(out), int(events)
    n_signal = min(max(round(events * float(signal_fraction)), 1), events - 1)
    plan = ((SIGNAL, n_signal), (BACKGROUND, events - n_signal))

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    with tqdm(
        total=events, unit="events", desc="sample", disable=not sys.stderr.isatty()
    ) as progress:
        for index, (process, n) in enumerate(plan):
            path = out / f"{process.name}.root"
            _write_file(path, tree, process, n, seed, index, basket_events, progress)
            files.append(path)
    inputs = write_inputs(
        out / "inputs", files, [p.label for p, _ in plan], tree, seed, [n for _, n in plan]
    )

    seconds = time.perf_counter() - started
    written = sum(path.stat().st_size for path in files)
    log.info(
        f"sample: {events} events ({n_signal} signal, {events - n_signal} background, "
        f"seed {seed}) -> {', '.join(str(p) for p in files)}; {written} bytes in "
        f"{seconds:.2f} s ({events / max(seconds, 1e-9):,.0f} events/s); inputs in {inputs}"
    )
    return SampleResult(tuple(files), inputs, tuple(n for _, n in plan))


def _check_arguments(
    out: str | Path,
    events: int,
    seed: int,
    tree: str,
    signal_fraction: float,
    basket_events: int,
) -> None:
    """Raise :class:`ConfigError` before anything is written."""
    if not _is_int(events) or events < 2:
        raise ConfigError(
            f"events must be an integer of at least 2 (one signal and one background event), "
            f"got {events!r}; pass e.g. --events 10000"
        )
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}; e.g. --seed 1")
    if isinstance(signal_fraction, bool) or not (
        isinstance(signal_fraction, (int, float, np.floating)) and 0.0 < signal_fraction < 1.0
    ):
        raise ConfigError(
            f"signal_fraction must be a number strictly between 0 and 1, got "
            f"{signal_fraction!r}; 0.5 writes as many signal as background events"
        )
    if not _is_int(basket_events) or basket_events < 1:
        raise ConfigError(
            f"basket_events must be a positive integer, got {basket_events!r}; "
            "10000 gives baskets of about 40 kB per float branch"
        )
    if not isinstance(tree, str) or not tree or "/" in tree or ";" in tree:
        raise ConfigError(
            f"tree must be a non-empty name without '/' or ';', got {tree!r}; e.g. 'events'"
        )
    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(
            f"the output path exists and is not a folder: {out}; give a folder to write into"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _write_file(
    path: Path,
    tree: str,
    process: Process,
    n: int,
    seed: int,
    file_index: int,
    basket_events: int,
    progress: tqdm,
) -> None:
    """Write ``n`` events of ``process`` to ``path`` through a temporary name."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with uproot.recreate(partial) as file:
            ttree = None
            for block in _blocks(process, n, seed, file_index, basket_events):
                if ttree is None:
                    types = {name: _branch_type(array) for name, array in block.items()}
                    ttree = file.mktree(tree, types, title=f"rootml sample: {process.name}")
                ttree.extend(block)
                progress.update(len(block["run"]))
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _branch_type(array: np.ndarray | ak.Array) -> np.dtype | ak.types.Type:
    return array.dtype if isinstance(array, np.ndarray) else array.type


def _blocks(
    process: Process, n: int, seed: int, file_index: int, basket_events: int
) -> Iterator[dict[str, np.ndarray | ak.Array]]:
    """Yield the events of one file, ``basket_events`` at a time, each block with its own
    random stream derived from ``(seed, file_index, block_index)``."""
    for block_index, start in enumerate(range(0, n, basket_events)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, file_index, block_index]))
        yield generate_events(process, start, min(basket_events, n - start), n, rng)


def generate_events(
    process: Process, start: int, n: int, total: int, rng: np.random.Generator
) -> dict[str, np.ndarray | ak.Array]:
    """Events ``start .. start + n`` of a file of ``total`` events, as branch arrays.

    Pure and vectorised: flat branches are NumPy arrays, collections are awkward records of
    lists (uproot writes ``nJet``, ``Jet_pt``, ... from ``Jet``).
    """
    index = np.arange(start, start + n, dtype=np.int64)
    run_index = index * len(RUNS) // total
    run_start = -(-(run_index * total) // len(RUNS))  # first event of each event's run
    branches: dict[str, np.ndarray | ak.Array] = {
        "run": np.asarray(RUNS, dtype=np.uint32)[run_index],
        "luminosityBlock": (1 + (index - run_start) // EVENTS_PER_LUMI).astype(np.uint32),
        # unique and increasing within a file, with gaps like real event numbers
        "event": (index * 7 + rng.integers(0, 7, n) + 1).astype(np.uint64),
    }

    # pileup
    true_pileup = rng.gamma(8.0, 32.0 / 8.0, n)
    npvs = np.maximum(rng.poisson(0.75 * true_pileup), 1)
    rho = 0.42 * npvs + rng.gamma(2.0, 0.8, n)
    pv_z = 3.2 * rng.standard_t(6, n)

    # jets: over-dispersed Poisson counts, a few pileup jets, rare very busy events
    n_jet = rng.poisson(rng.gamma(6.0, process.jet_mean / 6.0, n))
    n_jet += rng.poisson(0.015 * npvs)
    n_jet += np.where(rng.random(n) < 0.002, rng.poisson(14.0, n), 0)
    n_jet = np.minimum(n_jet, MAX_JETS)
    total_jets = int(n_jet.sum())
    jet_pt = np.minimum(20.0 * (1.0 + rng.pareto(process.jet_alpha, total_jets)), 6500.0)
    jet_eta = _bounded_normal(rng, process.jet_eta_width, 4.7, total_jets)
    jet_phi = rng.uniform(-np.pi, np.pi, total_jets)
    jet_mass = jet_pt * rng.lognormal(np.log(0.12), 0.35, total_jets)
    is_b = rng.random(total_jets) < process.b_fraction
    btag = np.where(is_b, rng.beta(5.0, 1.5, total_jets), rng.beta(0.6, 8.0, total_jets))
    jet_owner, jet_order = _owner_and_pt_order(n_jet, jet_pt)
    jet_pt, jet_eta, jet_phi, jet_mass, btag = (
        a[jet_order] for a in (jet_pt, jet_eta, jet_phi, jet_mass, btag)
    )
    ht = _per_event(jet_owner, jet_pt, n)

    # leptons: prompt ones are harder and isolated, non-prompt ones soft and not isolated
    n_muon = rng.poisson(process.muon_mean, n)
    n_muon += np.where(rng.random(n) < 0.001, rng.poisson(4.0, n), 0)
    muon = _leptons(rng, process, int(n_muon.sum()), threshold=5.0, eta_max=2.4)
    muon_owner, muon_order = _owner_and_pt_order(n_muon, muon["pt"])
    muon = {k: v[muon_order] for k, v in muon.items()}
    n_electron = rng.poisson(process.electron_mean, n)
    electron = _leptons(rng, process, int(n_electron.sum()), threshold=7.0, eta_max=2.5)
    electron_owner, electron_order = _owner_and_pt_order(n_electron, electron["pt"])
    electron = {k: v[electron_order] for k, v in electron.items()}

    lepton_pt, lepton_phi = _leading_lepton(n_muon, muon, n_electron, electron)
    iso_sum = _per_event(muon_owner, muon["pfRelIso"] * muon["pt"], n) + _per_event(
        electron_owner, electron["pfRelIso"] * electron["pt"], n
    )
    isolated_muon = (muon["pt"] > 24.0) & (muon["pfRelIso"] < 0.15)
    fired = (_per_event(muon_owner, isolated_muon, n) > 0) & (rng.random(n) < 0.93)

    # missing momentum: neutrinos + resolution that grows with activity + rare mismeasured jets
    soft = rng.gamma(3.0, 3.0 * npvs + 20.0)
    sum_et = ht + soft + _per_event(muon_owner, muon["pt"], n)
    sum_et += _per_event(electron_owner, electron["pt"], n)
    sigma = 0.6 * np.sqrt(sum_et) + 2.0
    nu_pt = rng.gamma(1.5, process.neutrino_scale / 1.5, n) * (lepton_pt > 0)
    nu_phi = lepton_phi + rng.normal(np.pi, 1.2, n)
    met_x = nu_pt * np.cos(nu_phi) + rng.normal(0.0, sigma)
    met_y = nu_pt * np.sin(nu_phi) + rng.normal(0.0, sigma)
    lost = (rng.random(n) < 0.01) * rng.uniform(0.2, 0.8, n) * _nth(n_jet, jet_pt)
    met_x += lost * np.cos(_nth(n_jet, jet_phi))
    met_y += lost * np.sin(_nth(n_jet, jet_phi))
    met_pt = np.hypot(met_x, met_y)
    met_phi = np.arctan2(met_y, met_x)
    mt = np.sqrt(2.0 * lepton_pt * met_pt * (1.0 - np.cos(lepton_phi - met_phi)))

    dphi_jj, mjj = _dijet(n_jet, jet_pt, jet_eta, jet_phi, jet_mass)

    floats = {
        "PV_z": pv_z,
        "Pileup_nTrueInt": true_pileup,
        "rho": rho,
        "HT": ht,
        "MET_pt": met_pt,
        "MET_phi": met_phi,
        "MET_sumEt": sum_et,
        "MET_significance": (met_pt / sigma) ** 2,
        "MT": mt,
        "Lepton_isoSum": iso_sum,
        "deltaPhi_j1j2": dphi_jj,
        "mjj": mjj,
    }
    branches["HLT_IsoMu24"] = fired
    branches["PV_npvs"] = npvs.astype(np.int32)
    branches.update({name: values.astype(np.float32) for name, values in floats.items()})
    branches["Jet"] = _collection(
        n_jet, pt=jet_pt, eta=jet_eta, phi=jet_phi, mass=jet_mass, btagDeepB=btag
    )
    branches["Muon"] = _collection(n_muon, **muon)
    del electron["pfRelIso"]  # NanoAOD's electrons carry other isolation variables
    branches["Electron"] = _collection(n_electron, **electron)
    return branches


def _bounded_normal(rng: np.random.Generator, width: float, bound: float, size: int) -> np.ndarray:
    """Normal values with ``|x| < bound``; the few outside are redrawn uniformly inside."""
    values = rng.normal(0.0, width, size)
    outside = np.abs(values) >= bound
    values[outside] = rng.uniform(-bound, bound, int(outside.sum()))
    return values


def _owner_and_pt_order(counts: np.ndarray, pt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The event index of each object, and the permutation that sorts objects by event and
    then by descending pt (NanoAOD's order)."""
    owner = np.repeat(np.arange(len(counts)), counts)
    return owner, np.lexsort((-pt, owner))


def _leptons(
    rng: np.random.Generator, process: Process, size: int, threshold: float, eta_max: float
) -> dict[str, np.ndarray]:
    prompt = rng.random(size) < process.prompt_fraction
    scale = np.where(prompt, process.lepton_scale, 6.0)
    return {
        "pt": threshold + rng.lognormal(np.log(scale), 0.7),
        "eta": _bounded_normal(rng, 1.1, eta_max, size),
        "phi": rng.uniform(-np.pi, np.pi, size),
        "charge": np.where(rng.random(size) < 0.5, -1, 1).astype(np.int32),
        "pfRelIso": np.where(prompt, rng.exponential(0.04, size), rng.gamma(1.5, 0.25, size)),
    }


def _per_event(owner: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``values`` over the objects of each event, as float64 (also for no objects)."""
    return np.bincount(owner, weights=values, minlength=n).astype(np.float64, copy=False)


def _nth(counts: np.ndarray, values: np.ndarray, nth: int = 0) -> np.ndarray:
    """``values`` of the ``nth`` object of each event (0 where the event has fewer objects)."""
    out = np.zeros(len(counts))
    has = counts > nth
    out[has] = values[(np.cumsum(counts) - counts + nth)[has]]
    return out


def _leading_lepton(
    n_muon: np.ndarray,
    muon: dict[str, np.ndarray],
    n_electron: np.ndarray,
    electron: dict[str, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """pt and phi of the hardest muon or electron of each event (0, 0 without leptons)."""
    muon_pt, electron_pt = _nth(n_muon, muon["pt"]), _nth(n_electron, electron["pt"])
    muon_wins = muon_pt >= electron_pt
    return (
        np.where(muon_wins, muon_pt, electron_pt),
        np.where(muon_wins, _nth(n_muon, muon["phi"]), _nth(n_electron, electron["phi"])),
    )


def _dijet(
    n_jet: np.ndarray, pt: np.ndarray, eta: np.ndarray, phi: np.ndarray, mass: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """|Δφ| and invariant mass of the two leading jets (0 for events with fewer than two)."""
    pt1, pt2 = _nth(n_jet, pt, 0), _nth(n_jet, pt, 1)
    eta1, eta2 = _nth(n_jet, eta, 0), _nth(n_jet, eta, 1)
    phi1, phi2 = _nth(n_jet, phi, 0), _nth(n_jet, phi, 1)
    m1, m2 = _nth(n_jet, mass, 0), _nth(n_jet, mass, 1)
    two = n_jet >= 2
    dphi = np.where(two, np.abs(np.angle(np.exp(1j * (phi1 - phi2)))), 0.0)
    energy = np.hypot(m1, pt1 * np.cosh(eta1)) + np.hypot(m2, pt2 * np.cosh(eta2))
    px = pt1 * np.cos(phi1) + pt2 * np.cos(phi2)
    py = pt1 * np.sin(phi1) + pt2 * np.sin(phi2)
    pz = pt1 * np.sinh(eta1) + pt2 * np.sinh(eta2)
    mjj = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    return dphi, np.where(two, mjj, 0.0)


def _collection(counts: np.ndarray, **fields: np.ndarray) -> ak.Array:
    """A jagged record array (``var * {field: ...}``) from flat, already ordered fields;
    floating-point fields are stored as float32, like NanoAOD's."""
    return ak.zip(
        {
            name: ak.unflatten(
                values.astype(np.float32) if values.dtype.kind == "f" else values, counts
            )
            for name, values in fields.items()
        }
    )


# ---------------------------------------------------------------------------------------------
# the inputs folder

MODEL_PY = '''\
"""A small Keras classifier in MLaaS4HEP's form: model(idim) returns a compiled model."""


def model(idim):
    """Input(idim) -> Dense(16, relu) -> Dense(1, sigmoid), for binary labels."""
    try:
        from tensorflow import keras
    except ImportError:
        import keras

    inputs = keras.Input(shape=(idim,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    output = keras.layers.Dense(1, activation="sigmoid")(hidden)
    clf = keras.Model(inputs=inputs, outputs=output)
    clf.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return clf
'''

INPUT_YML = """\
# rootml workflow input (validated against rootml's input schema)
files: files.txt          # or a YAML list of paths/URLs
labels: labels.txt        # or a list, one per file
tree: {tree}
model: model.py
seed: {seed}
data:
  nevts: -1
  chunk_size: 10000
  redirector: null
  split: {{val: 0.16, test: 0.2}}
features:
  identifiers: [run, event, luminosityBlock]
  selected: []
  exclude: []
  scaling: quantile
  jagged_cap: max
  counts: auto
  masks: false
  nan_policy: error
training:
  epochs: 5
  batch_size: 256
  shuffle: true
publish:
  url: null
  name: rootml_sample
"""

#: the same run as an analysis trains it: a selection, a jet selection, new variables, and
#: events weighted by cross-section (signal 0.9 pb, background 800 pb, per generated event)
ANALYSIS_YML = (
    INPUT_YML.replace("name: rootml_sample", "name: rootml_sample_analysis").replace(
        "nan_policy: error", "nan_policy: replace   # the leading jet of an event without one"
    )
    + """\
selection: "nJet >= 2 & HT > 100 & any(Jet_btagDeepB > 0.2)"
object_selection:
  Jet: "Jet_pt > 25 & abs(Jet_eta) < 2.4"
new_variables:
  ht_jets: "sum(Jet_pt)"
  lead_jet_pt: "Jet_pt[0]"
  met_over_ht: "where(HT > 0, MET_pt / HT, 0)"
weights:   # one per line of files.txt: cross-section / generated events
  - {{xsec: 0.9, nevents_generated: {signal}}}
  - {{xsec: 800.0, nevents_generated: {background}}}
"""
)


def write_inputs(
    folder: Path,
    files: list[Path],
    labels: list[int],
    tree: str,
    seed: int,
    events: list[int],
) -> Path:
    """Write ``files.txt``, ``labels.txt``, ``params.json``, ``model.py``, ``input.yml`` and
    ``analysis.yml`` (the same with a selection, new variables and cross-section weights) into
    ``folder``; paths in ``files.txt`` are relative to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    relative = [
        Path(os.path.relpath(path.resolve(), folder.resolve())).as_posix() for path in files
    ]
    params = {
        "nevts": -1,
        "shuffle": True,
        "chunk_size": 10000,
        "epochs": 5,
        "batch_size": 256,
        "identifier": list(IDENTIFIERS),
        "branch": tree,
        "selected_branches": [],
        "exclude_branches": [],
        "redirector": "root://cms-xrd-global.cern.ch",
        "verbose": 1,
    }
    header = "# ROOT files, one per line (relative to this folder); labels.txt gives each a label\n"
    contents = {
        "files.txt": header + "".join(f"{path}\n" for path in relative),
        "labels.txt": "".join(f"{label}\n" for label in labels),
        "params.json": json.dumps(params, indent=2) + "\n",
        "model.py": MODEL_PY,
        "input.yml": INPUT_YML.format(tree=_yaml_scalar(tree), seed=seed),
        "analysis.yml": ANALYSIS_YML.format(
            tree=_yaml_scalar(tree), seed=seed, signal=events[0], background=events[1]
        ),
    }
    for name, text in contents.items():
        partial = folder / f".{name}.partial"
        partial.write_text(text, encoding="utf-8")
        partial.replace(folder / name)
    return folder


def _yaml_scalar(text: str) -> str:
    """``text`` bare when YAML reads it back as the same string, else double-quoted."""
    bare = re.fullmatch(r"[A-Za-z_][\w.-]*", text) and yaml.safe_load(text) == text
    return text if bare else json.dumps(text)


def make_rucio_sample(out: str | Path, events: int, seed: int = 1, files: int = 3):
    """Write ``files`` gzipped JSON-lines files of ``events`` transfers in all into ``out``, and
    ``out/mlaas4hep/`` as MLaaS4HEP's Rucio example takes them: files.txt, labels.txt (the
    field ``activity``), params.json, model.py and preproc.py (its ``preprocessing(rec)``)."""
    if events < 2 * files:
        raise ConfigError(f"--events must be at least {2 * files} for {files} files, got {events}")
    out = Path(out)
    per_file = [events // files + (i < events % files) for i in range(files)]
    paths = []
    for index, n in enumerate(per_file):
        paths += rucio_sample.write_rucio_sample(
            out, files=1, records_per_file=n, seed=seed, first=index
        )
    folder = out / "mlaas4hep"
    folder.mkdir(parents=True, exist_ok=True)
    relative = [os.path.relpath(p.resolve(), folder.resolve()) for p in paths]
    contents = {
        "files.txt": "".join(f"{p}\n" for p in relative),
        "labels.txt": "activity\n",  # a field name, not one label per file
        "params.json": json.dumps(rucio_sample.PARAMS, indent=2) + "\n",
        "model.py": MODEL_PY,
        "preproc.py": rucio_sample.PREPROC_PY,
    }
    for name, text in contents.items():
        (folder / name).write_text(text, "utf-8")
    names = "".join(f"  - {p.name}\n" for p in paths)
    (out / "input.yml").write_text(RUCIO_INPUT_YML.format(files=names), "utf-8")
    return SampleResult(tuple(paths), folder, tuple(per_file))


#: the same records without a user function: the string fields are categories
#: (rootml.categories) and the class is each transfer's activity, by its name
RUCIO_INPUT_YML = """\
# rootml run --input input.yml: the Rucio records as they are, without preprocessing(rec).
# The string fields (event_type, the RSEs, protocol, scope) become one-hot columns with a
# vocabulary fixed at merge; names and checksums (a value per record) are left out by merge.
files:
{files}labels: {{field: data.activity}}   # one class per activity, by its name
features:
  exclude: [metadata.*]
  categorical: auto      # one-hot up to 16 values, else the value's index
training:
  epochs: 5
"""
