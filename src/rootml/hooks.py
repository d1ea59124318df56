"""A user's record preprocessing hook, as a document the data path carries from step to step.

MLaaS4HEP's ``--preproc FILE.py`` defines ``preprocessing(rec)``: one record (a dict, nested
as parsed) in, one flat dict out, or ``None`` to drop the record. rootml also takes
``preprocess_chunk(chunk)`` (a whole ``pyarrow.Table`` in and out) for speed. Either is run by
:mod:`rootml.records` on JSON lines, CSV, Parquet and Avro inputs.

The hook travels as ``{"file": NAME, "sha256": HEX, "code": TEXT}``: ``specs`` records it in
each file's specs, ``merge`` checks they agree and keeps it in the layout, and ``preprocess``
(when it reads a file rather than the columns ``specs`` staged) runs the layout's copy. So
the layout's digest changes with the hook's code, and shards made with another hook are
refused. The model server never runs it: code from an uploaded bundle is not executed, and
clients send the hook's output fields (the model's named inputs).

This module imports nothing beyond the standard library; the readers are the ``records``
extra.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from .exceptions import ConfigError

RECORD_HOOK, CHUNK_HOOK = "preprocessing", "preprocess_chunk"


def hook_document(path: str | Path) -> dict[str, str]:
    """The hook document of a user's file, checked now (it runs, and defines one hook)."""
    path = Path(path)
    try:
        code = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no preprocessing file {str(path)!r}; check the path (relative to the input's folder)"
        ) from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"the preprocessing file is not UTF-8 text (byte {err.start}); save it as UTF-8\n"
            f"in file {path}"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"cannot read the preprocessing file: {err.strerror}\nin file {path}"
        ) from None
    doc = {"file": path.name, "sha256": hashlib.sha256(code.encode()).hexdigest(), "code": code}
    load_hook(doc, str(path))
    return doc


def load_hook(doc: Mapping[str, str], where: str | None = None) -> Callable:
    """The ``preprocessing`` or ``preprocess_chunk`` function of a hook document, run as
    MLaaS4HEP runs its ``--preproc`` file (as a module of its own). ``where`` names the file
    in messages (default: its name in the document)."""
    where = where or doc["file"]
    namespace: dict = {"__name__": "rootml_preprocessing", "__file__": where}
    try:
        exec(compile(doc["code"], where, "exec"), namespace)  # noqa: S102 (the user's own file)
    except SyntaxError as err:
        raise ConfigError(f"syntax error at line {err.lineno}: {err.msg}\nin file {where}") from err
    except Exception as err:
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        raise ConfigError(f"running the file raised {last}\nin file {where}") from err
    found = [n for n in (RECORD_HOOK, CHUNK_HOOK) if callable(namespace.get(n))]
    if len(found) == 2:
        raise ConfigError(
            f"the file defines both {RECORD_HOOK}(rec) and {CHUNK_HOOK}(chunk); keep one\n"
            f"in file {where}"
        )
    if not found:
        defined = sorted(n for n, v in namespace.items() if callable(v) and not n.startswith("_"))
        raise ConfigError(
            f"the file defines no function {RECORD_HOOK}(rec) or {CHUNK_HOOK}(chunk) "
            f"(it defines: {', '.join(defined) or 'no functions'});\n"
            f"rename the function to one of those\nin file {where}"
        )
    return namespace[found[0]]
