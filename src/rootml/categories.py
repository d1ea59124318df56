"""String fields as categories: counted per file, a vocabulary fixed at merge, encoded as codes.

A record field holding strings (Rucio's ``activity``, a site name, a transfer protocol) is a
branch of kind :data:`rootml.reading.CATEGORY`. ``specs`` counts each file's values
(:class:`Counts`); ``merge`` adds the files' counts and fixes the vocabulary in the layout
(:func:`vocabulary`: the most frequent values, at most :data:`MAX_CATEGORIES`, ties broken by
the value); every later step maps a value to its index in the vocabulary, and a value outside
it (unseen in training, rarer than the vocabulary's last, or missing) to the ``other`` slot
after the last (:func:`codes`). The layout's input column for the field says how the code
becomes features (:data:`rootml.config.ENCODINGS`): ``onehot`` (one 0/1 column per value and one for
``other``) or ``index`` (the code, scaled to [0, 1]); ``auto`` takes one-hot for vocabularies
of at most :data:`ONEHOT_MAX` values.

Staged columns hold a file's strings as int32 codes into the file's own dictionary
(:class:`LocalDictionary`), so that ``preprocess`` reads no text again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow (the ``records`` extra) is imported inside the functions: only record files have
# string fields, and a ROOT-only install imports this module too

#: ``auto`` (of :data:`rootml.config.ENCODINGS`) is one-hot up to this many values
ONEHOT_MAX = 16
#: the vocabulary's size limit: rarer values share the ``other`` slot
MAX_CATEGORIES = 64
#: distinct values counted per file and field; a field with more is an identifier-like
#: string (a file name, a UUID), not a category
MAX_DISTINCT = 10_000
OTHER = "other"


def _arrow(values) -> pa.Array:
    """``values`` as one Arrow array; an awkward categorical array stays dictionary-encoded."""
    import pyarrow as pa

    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        import awkward as ak

        values = ak.to_arrow(values, extensionarray=False, categorical_as_dictionary=True)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values


def as_strings(values) -> pa.Array:
    """``values`` (an awkward or Arrow array of strings, maybe dictionary-encoded) as one
    Arrow string array."""
    import pyarrow as pa

    values = _arrow(values)
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return values


def as_dictionary(values) -> pa.DictionaryArray:
    """``values`` (as for :func:`as_strings`) dictionary-encoded: each distinct string once
    (the dictionary, maybe with values no record here holds) and int indices into it (null:
    missing). Encoding is one hash pass; an already encoded array is taken as it is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = _arrow(values)
    if not pa.types.is_dictionary(values.type):
        values = pc.dictionary_encode(as_strings(values))
    elif not pa.types.is_string(values.type.value_type):
        values = pa.DictionaryArray.from_arrays(values.indices, values.dictionary.cast(pa.string()))
    return values


def _indices(encoded: pa.DictionaryArray, missing: int) -> np.ndarray:
    """The int64 indices of ``encoded``, ``missing`` where the value is null."""
    return np.asarray(encoded.indices.fill_null(missing), dtype=np.int64)


def _positions(words: pa.Array, values: Sequence[str]) -> np.ndarray:
    """Where each of ``words`` stands in ``values`` (-1: not there), int64."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(words, value_set=pa.array(list(values), pa.string()))
    return np.asarray(found.fill_null(-1), dtype=np.int64)


class Counts:
    """The values of one string branch over a file, counted (``None`` past
    :data:`MAX_DISTINCT` distinct values), and the records where it was missing."""

    def __init__(self) -> None:
        self.values: Counter | None = Counter()
        self.count = 0
        self.missing = 0

    def add(self, values) -> None:
        encoded = as_dictionary(values)
        self.missing += encoded.null_count
        self.count += len(encoded) - encoded.null_count
        if self.values is None or len(encoded) == encoded.null_count:
            return
        words = encoded.dictionary
        counted = np.bincount(_indices(encoded, len(words)), minlength=len(words) + 1)[:-1]
        held = np.flatnonzero(counted)
        if held.size > MAX_DISTINCT:  # an identifier: not worth turning into Python
            self.values = None
            return
        for name, number in zip(words.take(held).to_pylist(), counted[held].tolist(), strict=True):
            self.values[name] += number  # (a dictionary from a file may repeat a value)
        if len(self.values) > MAX_DISTINCT:
            self.values = None

    def to_json(self) -> dict:
        return {
            "count": self.count,
            "missing": self.missing,
            "categories": dict(sorted(self.values.items())) if self.values is not None else None,
        }


def merged_counts(per_file: Sequence[dict | None]) -> dict[str, int] | None:
    """The files' value counts added up (None when one file had too many values)."""

    total: Counter = Counter()
    for counts in per_file:
        if counts is None:
            return None
        total.update(counts)
    return None if len(total) > MAX_DISTINCT else dict(total)


def vocabulary(counts: dict[str, int], most: int = MAX_CATEGORIES) -> list[str]:
    """The ``most`` most frequent values, most frequent first (ties: in value order)."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [value for value, _ in ranked[:most]]


def encoding_of(choice: str, size: int) -> str:
    """``onehot`` or ``index`` for a vocabulary of ``size`` values under setting ``choice``."""
    if choice == "auto":
        return "onehot" if size <= ONEHOT_MAX else "index"
    return choice


def codes(values, vocab: Sequence[str]) -> np.ndarray:
    """int64 index of each value in ``vocab``; ``len(vocab)`` (the ``other`` slot) for a
    value outside it or missing."""
    encoded = as_dictionary(values)
    slot = _positions(encoded.dictionary, vocab)
    slot[slot < 0] = len(vocab)
    return np.append(slot, len(vocab))[_indices(encoded, len(slot))]


def feature_names(branch: str, vocab: Sequence[str], encoding: str) -> list[str]:
    """The names of the columns of one category in a row."""
    if encoding == "index":
        return [branch]
    return [f"{branch}={value}" for value in vocab] + [f"{branch}={OTHER}"]


class LocalDictionary:
    """A file's own vocabulary while its strings are staged: int32 codes that stay valid as
    values are added (-1: missing). Past :data:`MAX_DISTINCT` values it is ``full`` and
    encodes nothing more (the field is an identifier, which merge drops)."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.full = False

    def encode(self, values) -> np.ndarray | None:
        """The codes of ``values``, or None once the dictionary is full."""
        if self.full:
            return None
        encoded = as_dictionary(values)
        words = encoded.dictionary
        indices = _indices(encoded, len(words))
        held = np.zeros(len(words) + 1, dtype=bool)
        held[indices] = True  # a dictionary may hold values no record here has
        local = _positions(words, self.values)
        unseen = np.flatnonzero(held[:-1] & (local < 0))
        if len(self.values) + unseen.size > MAX_DISTINCT:
            self.full, self.values = True, []
            return None
        local[unseen] = np.arange(len(self.values), len(self.values) + unseen.size)
        self.values += words.take(unseen).to_pylist()
        return np.append(local, -1).astype(np.int32)[indices]


def decode(local: np.ndarray, dictionary: Sequence[str]) -> pa.DictionaryArray:
    """Staged codes back to strings (missing where -1), dictionary-encoded: read as an awkward
    categorical array, which :func:`codes` maps to a vocabulary without touching a string."""
    import pyarrow as pa

    indices = pa.array(local, pa.int32(), mask=local < 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(dictionary), pa.string()))
