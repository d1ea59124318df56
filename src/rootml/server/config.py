"""Settings of ``rootml serve``: one frozen dataclass, passed to worker processes as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..exceptions import ConfigError
from .archive import ArchiveLimits

MIB = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    """Where the models are, where to listen, and the limits on what clients may send."""

    models: Path
    host: str = "127.0.0.1"
    port: int = 8083
    grpc_port: int | None = None  # KServe V2 over gRPC on this port (0: a free one); None: off
    token_file: Path | None = None
    workers: int = 1
    cache_size: int = 10  # loaded models kept per worker (TFaaS's cacheLimit)
    threads: int = 1  # onnxruntime intra-op threads per model
    max_request_bytes: int = 64 * MIB  # prediction bodies (10k rows x 124 features is 14 MB)
    max_upload_bytes: int = 512 * MIB
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    access_log: bool = False
    log_level: str = "info"
    #: run a model's preprocessing(rec) (its layout's code) for 'record' requests: the
    #: bundle's code runs in the server, so only for bundles the operator trusts
    run_bundle_hooks: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", Path(self.models))
        if self.token_file is not None:
            object.__setattr__(self, "token_file", Path(self.token_file))
        if self.workers < 1 or self.cache_size < 1 or self.threads < 1:
            raise ConfigError("workers, cache size and threads must be at least 1")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        if self.grpc_port is not None and not 0 <= self.grpc_port < 65536:
            raise ConfigError(f"the gRPC port must be 0-65535, got {self.grpc_port}")
        if self.grpc_port and self.grpc_port == self.port:
            raise ConfigError(
                f"the gRPC port and the HTTP port are both {self.port}: give them different ones"
            )
        if self.max_request_bytes < 1024 or self.max_upload_bytes < 1024:
            raise ConfigError("the request and upload limits must be at least 1 KiB")

    def to_json(self) -> str:
        doc = asdict(self)
        doc["models"] = str(self.models)
        doc["token_file"] = str(self.token_file) if self.token_file else None
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        doc = json.loads(text)
        doc["archive"] = ArchiveLimits(**doc["archive"])
        return cls(**doc)
