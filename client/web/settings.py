"""The web backend's settings: one frozen object, checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass

from client import ClientConfig, ConfigError

__all__ = ["MIB", "WebSettings"]

MIB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """How the web backend reaches the inference service and what it accepts.

    Attributes:
        client: Where the inference service is and how to call it.
        max_files: Most pictures in one ``POST /api/detect``.
        max_upload_bytes: Largest request body of ``POST /api/detect``.
        health_interval: Seconds between two probes of the inference service's state.
        probe_timeout: Seconds one probe may take before the service counts as unreachable.
        concurrency: Requests in flight to the inference service for one upload of many
            pictures (each request carries up to ``client.batch_size`` pictures).
    """

    client: ClientConfig
    max_files: int = 16
    max_upload_bytes: int = 32 * MIB
    health_interval: float = 5.0
    probe_timeout: float = 5.0
    concurrency: int = 2

    def __post_init__(self) -> None:
        if self.max_files < 1:
            raise ConfigError(f"max_files must be at least 1, got {self.max_files}; "
                              f"give --max-files 16 or so")
        if self.max_upload_bytes < 1024:
            raise ConfigError(f"max_upload_bytes must be at least 1024, got "
                              f"{self.max_upload_bytes}; give --max-upload-mb 32 or so")
        if not self.health_interval > 0 or not self.probe_timeout > 0:
            raise ConfigError("health_interval and probe_timeout must be positive seconds")
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")

    @property
    def max_upload_mb(self) -> float:
        """``max_upload_bytes`` in MiB, as messages and flags name it."""
        return self.max_upload_bytes / MIB
