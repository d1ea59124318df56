"""``rootml serve``: a TFaaS-compatible inference server for rootml bundles.

Layers, from the edge inwards: :mod:`.archive` (hostile tarballs), :mod:`.auth` (bearer
token, bind rule), :mod:`.store` (the model folder, versions, the LRU cache of loaded
models), :mod:`.payloads` (protocol bodies to float32 rows and back), :mod:`.app` (the
Starlette routes), :mod:`.runner` (uvicorn, and an embedded server in a thread).
Starlette and uvicorn are imported only here, so the rest of rootml does not need them.
"""

from __future__ import annotations

from .archive import ArchiveLimits
from .config import ServerConfig
from .runner import EmbeddedServer, serve

__all__ = ["ArchiveLimits", "EmbeddedServer", "ServerConfig", "serve"]
