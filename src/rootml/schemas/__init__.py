"""JSON Schemas shipped with rootml, and the one function that validates against them.

Schemas live next to this file as ``<name>.schema.json``; each carries ``$id``
``https://rootml.invalid/schemas/<name>/<version>`` so documents can say which version they
follow. Validation goes through a ``referencing`` registry (not the deprecated RefResolver),
as pyhf's ``schema/validator.py`` does.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from ..exceptions import SchemaValidationError

SCHEMA_NAMES = ("input", "file-specs", "layout", "fetch-record", "columns")


@cache
def _registry() -> Registry:
    resources_ = []
    for name in SCHEMA_NAMES:
        schema = load_schema(name)
        resources_.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources_)


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The schema ``name`` (one of :data:`SCHEMA_NAMES`) as a dict."""
    if name not in SCHEMA_NAMES:
        msg = f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}"
        raise ValueError(msg)
    text = resources.files(__name__).joinpath(f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


def validate(document: Any, name: str, *, where: str = "document") -> None:
    """Validate ``document`` against schema ``name``; raise SchemaValidationError naming the
    key path of the first problem and where the document came from."""
    schema = load_schema(name)
    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, registry=_registry())
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    err = _deepest(errors[0])
    path = "/".join(str(p) for p in err.absolute_path) or "(top level)"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    raise SchemaValidationError(f"invalid {name} at key {path!r}: {err.message}{more}\nin {where}")


def _deepest(err: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For "not valid under any of the given schemas" (oneOf/anyOf), the alternative that
    came closest (jsonschema's best_match over its sub-errors): "[] should be non-empty",
    not a list of the schemas."""
    if err.validator in ("oneOf", "anyOf") and err.context:
        # an alternative of the value's own type, broken by a constraint, says what to fix; a
        # type mismatch only says that the value is not another alternative
        fitting = [e for e in err.context if e.validator != "type"]
        return _deepest(jsonschema.exceptions.best_match(fitting or err.context))
    return err
