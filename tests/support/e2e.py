"""Where the end-to-end suite's service answers (see tests/e2e/conftest.py for the settings)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """Where the service under test answers."""

    http_url: str
    grpc_url: str
    model_name: str
    host_header: str | None = None
    demo: bool = True  # serves the trained demo detector, so detections can be judged
