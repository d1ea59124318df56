"""Small, seeded ROOT files written with uproot for the tests (no committed binaries)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot


def event_arrays(n: int, seed: int = 0, *, signal: bool = False) -> dict:
    """A NanoAOD-like block: identifiers, flat floats, an int, a bool and two collections."""
    rng = np.random.default_rng(seed)
    n_jet = rng.poisson(4.0 if signal else 2.5, n)
    n_mu = rng.poisson(1.0, n)
    jet_pt = rng.exponential(40.0, n_jet.sum()).astype(np.float32) + 20
    return {
        "run": np.full(n, 1, dtype=np.int32),
        "event": np.arange(n, dtype=np.int64),
        "luminosityBlock": (np.arange(n) // 100).astype(np.int32),
        "HT": ak.sum(ak.unflatten(jet_pt, n_jet), axis=1).to_numpy().astype(np.float32),
        "MET": rng.gamma(2.0, 20.0 if signal else 15.0, n).astype(np.float32),
        "nPV": rng.poisson(30, n).astype(np.int32),
        "trigger": rng.random(n) < 0.7,
        "Jet": ak.zip(
            {
                "pt": ak.unflatten(jet_pt, n_jet),
                "eta": ak.unflatten(rng.normal(0, 1.5, n_jet.sum()).astype(np.float32), n_jet),
            }
        ),
        "Muon": ak.zip(
            {"pt": ak.unflatten(rng.exponential(20.0, n_mu.sum()).astype(np.float32), n_mu)}
        ),
    }


def write_tree(
    path: Path, arrays: dict, *, tree: str = "events", basket: int | None = None
) -> Path:
    """Write ``arrays`` as a TTree, one basket per ``basket`` entries."""
    n = len(next(iter(arrays.values())))
    basket = basket or max(n, 1)
    types = {
        k: (v.type if isinstance(v, ak.Array) else (v.dtype, v.shape[1:]))
        for k, v in arrays.items()
    }
    with uproot.recreate(path) as f:
        f.mktree(tree, types)
        for lo in range(0, n, basket):
            f[tree].extend({k: v[lo : lo + basket] for k, v in arrays.items()})
    return path


def write_events(
    path: Path,
    n: int,
    seed: int = 0,
    *,
    signal: bool = False,
    tree: str = "events",
    basket: int | None = None,
    **changes,
) -> Path:
    """A file of ``n`` events; ``changes`` replace (value) or drop (None) branches."""
    arrays = event_arrays(n, seed, signal=signal)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    return write_tree(path, arrays, tree=tree, basket=basket)


def write_rntuple(path: Path, n: int, seed: int = 0, *, name: str = "ntuple") -> Path:
    arrays = event_arrays(n, seed)
    with uproot.recreate(path) as f:
        f[name] = arrays
    return path


def write_shapes(path: str | Path, kind: str = "ttree", *, n: int = 500, seed: int = 1) -> Path:
    """Write a small seeded file of every branch shape the reader must classify, with one tree
    ``events`` (a TTree, or an RNTuple when
    ``kind="rntuple"``) and return its path.

    TTree branches: ``met`` (float32), ``njet`` (int32), ``nJet`` + ``Jet_pt``/``Jet_eta``
    (jagged float32), ``p3`` (float32[3]) and ``m2`` (float32[2][2], unsupported).
    RNTuple fields: ``met``, ``Jet`` (a list of {pt, eta} records, read as ``Jet.pt`` and
    ``Jet.eta``), ``hits`` (list of lists, unsupported) and ``label`` (strings, unsupported).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 6, n)
    total = int(counts.sum())
    jets = ak.zip(
        {
            "pt": ak.unflatten(rng.exponential(30.0, total).astype(np.float32), counts),
            "eta": ak.unflatten(rng.normal(0.0, 2.0, total).astype(np.float32), counts),
        }
    )
    met = rng.exponential(50.0, n).astype(np.float32)
    with uproot.recreate(path) as f:
        if kind == "ttree":
            data = {
                "met": met,
                "njet": counts.astype(np.int32),
                "Jet": jets,
                "p3": rng.normal(size=(n, 3)).astype(np.float32),
                "m2": rng.normal(size=(n, 2, 2)).astype(np.float32),
            }
            types = {
                "met": "float32",
                "njet": "int32",
                "Jet": jets.type.content,
                "p3": np.dtype((np.float32, (3,))),
                "m2": np.dtype((np.float32, (2, 2))),
            }
            f.mktree("events", types).extend(data)
        elif kind == "rntuple":
            f["events"] = {
                "met": met,
                "Jet": jets,
                "hits": ak.unflatten(jets.pt, np.ones(n, np.int64)),  # var * var * float32
                "label": ak.Array(["sig" if m > 50 else "bkg" for m in met]),
            }
        else:
            raise ValueError(f"kind must be 'ttree' or 'rntuple', not {kind!r}")
    return path
