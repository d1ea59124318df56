"""``rootml serve``: a TFaaS-compatible inference server for rootml bundles.

Layers, from the edge inwards: :mod:`.archive` (hostile tarballs), :mod:`.auth` (bearer
token, bind rule), :mod:`.backends` (a bundle folder loaded into onnxruntime or TensorFlow),
:mod:`.store` (the model folder, versions, the LRU cache of loaded models), :mod:`.bodies`
(reading request bodies within their byte limits), :mod:`.protocols` (the TFaaS, KServe V2
and TF Serving request shapes to float32 rows, and scores back into their replies),
:mod:`.uploads` (the upload routes), :mod:`.app` (the Starlette routes), :mod:`.launch`
(uvicorn, and the embedded server: ``rootml serve`` in a child process).
Starlette and uvicorn are imported only here, so the rest of rootml does not need them.
"""

from __future__ import annotations

from .archive import ArchiveLimits
from .config import ServerConfig
from .launch import EmbeddedServer, serve

__all__ = ["ArchiveLimits", "EmbeddedServer", "ServerConfig", "serve"]
