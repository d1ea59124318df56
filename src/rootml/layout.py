"""The run's layout (``layout.json``), the document the merge stage (:mod:`.merging`) writes.

The layout fixes everything preprocessing, training and serving must agree on: the ordered
columns, scaling constants, jagged caps, the padding value, label classes, the split
fractions and seed, and the chunk plan. Its ``digest`` (sha256 of its canonical JSON) is
written into every shard and bundle, so mismatched pieces are caught instead of mixed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .exceptions import LayoutError
from .schemas import validate
from .storage import canonical_json, read_json, write_json

log = logging.getLogger(__name__)

#: the layout's file name, in the merge step's folder and in a bundle
LAYOUT_FILE = "layout.json"
#: its name before 0.2 (bundles and runs made then still load)
OLD_LAYOUT_FILE = "specs.json"


def layout_digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "digest"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def digest_of(doc) -> str | None:
    """The layout digest that a params.json, shard, shard record or features document names:
    ``layout_digest``, or ``specs_digest`` in one written before 0.2."""
    found = doc.get("layout_digest")
    return doc.get("specs_digest") if found is None else found


def layout_in(folder: Path) -> Path:
    """A bundle's or merge step's layout file (``layout.json``, else the old ``specs.json``)."""
    new, old = folder / LAYOUT_FILE, folder / OLD_LAYOUT_FILE
    if new.exists() or not old.exists():
        return new
    log.warning("%s: the layout's name before 0.2; rootml 0.3 reads only %s", old, LAYOUT_FILE)
    return old


def load_layout(path: str | Path) -> dict:
    """Read ``layout.json``, validate it and check its digest."""
    doc = read_json(path)
    validate(doc, "layout", where=f"file {path}")
    if layout_digest(doc) != doc["digest"]:
        raise LayoutError(
            f"the digest of {path} does not match its content (edited by hand?);\n"
            "rerun 'rootml merge' instead of editing the layout"
        )
    return doc


def write_layout(path: str | Path, doc: dict) -> Path:
    return write_json(path, doc)


# --------------------------------------------------------------------------- helpers
