"""The server's settings: one frozen dataclass, filled from the command line (serve_minimal.run)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    model_name: str  # the model id /v1/models reports and responses carry
    api_key: str | None = None  # require "Authorization: Bearer <key>" when set
    max_concurrency: int = 1  # generations running at once (capped by the runtime's max_concurrent_streams)
    max_queue: int = 16  # requests waiting for a slot; beyond, 429
    queue_timeout: float = 60.0  # seconds a request may wait for a slot; beyond, 429
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    body_timeout: float = 30.0  # seconds a client may take to send its body; beyond, 408 and the socket closes
    constrained: bool = True  # constrain calls to their function's JSON Schema (a request may override)

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("an empty API key would let an empty bearer token through; give a real key or none")
