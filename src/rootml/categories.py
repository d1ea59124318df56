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


def as_strings(values) -> pa.Array:
    """``values`` (an awkward or Arrow array of strings, maybe dictionary-encoded) as one
    Arrow string array."""
    import pyarrow as pa

    if not isinstance(values, (pa.Array, pa.ChunkedArray)):
        import awkward as ak

        values = ak.to_arrow(values, extensionarray=False)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return values


class Counts:
    """The values of one string branch over a file, counted (``None`` past
    :data:`MAX_DISTINCT` distinct values), and the records where it was missing."""

    def __init__(self) -> None:
        self.values: Counter | None = Counter()
        self.count = 0
        self.missing = 0

    def add(self, values) -> None:
        import pyarrow.compute as pc

        values = as_strings(values)
        self.missing += values.null_count
        self.count += len(values) - values.null_count
        if self.values is None or len(values) == values.null_count:
            return
        counted = pc.value_counts(values.drop_null())
        if len(counted) > MAX_DISTINCT:  # an identifier: not worth turning into Python
            self.values = None
            return
        words, numbers = counted.field("values").to_pylist(), counted.field("counts")
        self.values.update(dict(zip(words, numbers.to_pylist(), strict=True)))
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
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(as_strings(values), value_set=pa.array(list(vocab), pa.string()))
    return np.asarray(found.fill_null(len(vocab)), dtype=np.int64)


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
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.full:
            return None
        encoded = pc.dictionary_encode(as_strings(values))  # one hash pass over the values
        words = encoded.dictionary
        unseen = words.filter(pc.is_null(pc.index_in(words, value_set=self._known(pa))))
        if len(self.values) + len(unseen) > MAX_DISTINCT:
            self.full, self.values = True, []
            return None
        self.values += unseen.to_pylist()
        local = np.asarray(pc.index_in(words, value_set=self._known(pa)), dtype=np.int32)
        indices = np.asarray(encoded.indices.fill_null(len(local)), dtype=np.int64)
        return np.append(local, np.int32(-1))[indices]

    def _known(self, pa) -> pa.Array:
        return pa.array(self.values, pa.string())


def decode(local: np.ndarray, dictionary: Sequence[str]) -> pa.Array:
    """Staged codes back to strings (missing where -1)."""
    import pyarrow as pa

    indices = pa.array(local, pa.int32(), mask=local < 0)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(dictionary), pa.string())).cast(
        pa.string()
    )
