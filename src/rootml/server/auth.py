"""Bearer tokens for the routes that change the model store, and the bind-address rule.

The token is read from a file (never from the command line, where ``ps`` shows it), compared
in constant time with :func:`hmac.compare_digest`, and never logged. A server that listens on
anything but a loopback address must have one.
"""

from __future__ import annotations

import hmac
import logging
import stat
from pathlib import Path

from ..client import is_loopback
from ..exceptions import ConfigError, RequestError

log = logging.getLogger(__name__)

CHALLENGE = 'Bearer realm="rootml"'
MIN_TOKEN_LENGTH = 16


def load_token(path: str | Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped); refuse an empty or short one."""
    path = Path(path)
    try:
        text = path.read_text("utf-8").strip()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(
            f"token file {path} does not exist; write a random token into it, "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        ) from None
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"cannot read token file {path}: {err}") from None
    if len(text) < MIN_TOKEN_LENGTH or any(c.isspace() for c in text):
        raise ConfigError(
            f"the token in {path} must be at least {MIN_TOKEN_LENGTH} characters without "
            "spaces; generate one with python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by other users; chmod 600 it", path)
    return text


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host} without a token: anyone who can reach it could "
            "upload models (which run code) or delete them. Pass --token-file FILE, or bind to "
            "127.0.0.1 and put an authenticating proxy in front"
        )


def require_token(expected: str | None, authorization: str | None) -> None:
    """Raise a 401 unless ``authorization`` is ``Bearer <expected>`` (no-op without a token)."""
    if expected is None:
        return
    if not authorization:
        raise RequestError(401, "this route needs 'Authorization: Bearer <token>'")
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise RequestError(401, "the Authorization header must be 'Bearer <token>'")
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise RequestError(401, "the bearer token is not valid for this server")
