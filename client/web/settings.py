"""The web backend's settings: one frozen object, checked when it is built, and the two
files it may be given (the API key, the label map), read once at the edge."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from client import ClientConfig, ConfigError

__all__ = ["DEFAULT_INFERENCE_DEVICE", "DEFAULT_MAX_IN_FLIGHT", "DEFAULT_MAX_PREDICTIONS",
           "DEFAULT_MIN_SCORE_THRESHOLD", "MIB", "WebSettings", "read_api_key",
           "read_label_map"]

MIB = 1024 * 1024
#: The inference service's default ``--max_queue_size`` (predictor/config.py,
#: ``BatchingConfig``): one backend never holds more pictures in flight than the service
#: would queue. A test keeps the two equal.
DEFAULT_MAX_IN_FLIGHT = 256
#: The inference service's default ``--min_score_threshold`` (predictor/config.py): the
#: lowest ``score_threshold`` it accepts. A test keeps the two equal.
DEFAULT_MIN_SCORE_THRESHOLD = 0.05
#: Most predictions in one DeepStack answer. Frigate's deepstack detector writes them into
#: a 20-row array and raises IndexError on the 21st confident, known one
#: (blakeblackshear/frigate, frigate/detectors/plugins/deepstack.py at v0.18.0-beta1-19,
#: e3fa70189: ``np.zeros((20, 6))`` filled by index): a stock Frigate must never get more.
DEFAULT_MAX_PREDICTIONS = 20
#: What ``inferenceDevice`` says when the operator does not: CodeProject.AI's SDK reports
#: "CPU" for a module that names no device (codeproject/CodeProject.AI-Server,
#: src/SDK/Python/src/codeproject_ai_sdk/module_runner.py at e3468c831, ``inference_device``).
DEFAULT_INFERENCE_DEVICE = "CPU"
_MAX_KEY_BYTES = 4096
_MAX_LABEL_MAP_BYTES = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class WebSettings:
    """How the web backend reaches the inference service and what it accepts.

    Attributes:
        client: Where the inference service is and how to call it.
        max_files: Most pictures in one ``POST /api/detect``.
        max_upload_bytes: Largest request body of any picture route.
        health_interval: Seconds between two probes of the inference service's state.
        probe_timeout: Seconds one probe may take before the service counts as unreachable.
        concurrency: Requests in flight to the inference service for one upload of many
            pictures (each request carries up to ``client.batch_size`` pictures).
        max_in_flight: Most pictures the backend holds at once, all routes together;
            beyond it a request is refused at once with 503 and ``Retry-After``.
        api_key: The key callers must send (None: no key); never shown in ``repr``.
        protect_page_api: Whether ``POST /api/detect`` needs the key too (the DeepStack
            routes always do when there is one).
        label_map: The model's label -> the name the DeepStack routes answer with;
            labels it does not name pass through.
        min_score_threshold: The inference service's ``--min_score_threshold``: a
            DeepStack ``min_confidence`` below it is raised to it.
        max_predictions: Most predictions in one DeepStack answer (the highest scores).
        inference_device: What DeepStack answers say in ``inferenceDevice`` (CPU, GPU...):
            the backend cannot see the service's device, so the operator names it.
    """

    client: ClientConfig
    max_files: int = 16
    max_upload_bytes: int = 32 * MIB
    health_interval: float = 5.0
    probe_timeout: float = 5.0
    concurrency: int = 2
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    api_key: str | None = field(default=None, repr=False)
    protect_page_api: bool = False
    label_map: Mapping[str, str] = field(default_factory=dict)
    min_score_threshold: float = DEFAULT_MIN_SCORE_THRESHOLD
    max_predictions: int = DEFAULT_MAX_PREDICTIONS
    inference_device: str = DEFAULT_INFERENCE_DEVICE

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
        if self.max_in_flight < self.max_files:
            raise ConfigError(f"--max-in-flight ({self.max_in_flight}) must be at least "
                              f"--max-files ({self.max_files}), or a full upload could "
                              f"never be served")
        if self.api_key is not None and not self.api_key:
            raise ConfigError("the API key is empty; put the key in the file")
        if self.protect_page_api and self.api_key is None:
            raise ConfigError("--protect-page-api needs a key: give --api-key-file FILE "
                              "(or DETECT_WEB_API_KEY_FILE)")
        if not 0.0 <= self.min_score_threshold <= 1.0:
            raise ConfigError(f"--min-score-threshold must be from 0 to 1, got "
                              f"{self.min_score_threshold}")
        if self.max_predictions < 1:
            raise ConfigError(f"--max-predictions must be at least 1, got "
                              f"{self.max_predictions}; Frigate holds 20")
        if not self.inference_device.strip():
            raise ConfigError("--inference-device is empty; give CPU, GPU or the like")
        object.__setattr__(self, "label_map", MappingProxyType(dict(self.label_map)))

    @property
    def max_upload_mb(self) -> float:
        """``max_upload_bytes`` in MiB, as messages and flags name it."""
        return self.max_upload_bytes / MIB


def read_api_key(path: str) -> str:
    """The key in ``path``: its text without surrounding blanks (a Secret mounted as a
    file often ends with a newline).

    Raises:
        ConfigError: The file cannot be read, is too large, not text, or empty.
    """
    try:
        raw = Path(path).read_bytes()[:_MAX_KEY_BYTES + 1]
    except OSError as exc:
        raise ConfigError(f"cannot read the API key file {path!r}: "
                          f"{exc.strerror or exc}") from None
    if len(raw) > _MAX_KEY_BYTES:
        raise ConfigError(f"the API key file {path!r} is over {_MAX_KEY_BYTES} bytes; "
                          f"it should hold the key alone")
    try:
        key = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"the API key file {path!r} is not UTF-8 text") from None
    if not key or any(c in key for c in "\r\n"):
        raise ConfigError(f"the API key file {path!r} must hold one non-empty line")
    return key


def read_label_map(path: str) -> dict[str, str]:
    """The label map in ``path``: a JSON object, the model's label -> the product's.

    Raises:
        ConfigError: The file cannot be read or is not an object of strings.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_LABEL_MAP_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the label map {path!r}: {exc.strerror or exc}"
                          ) from None
    if len(raw) > _MAX_LABEL_MAP_BYTES:
        raise ConfigError(f"the label map {path!r} is over 1 MiB")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"the label map {path!r} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in doc.items()):
        raise ConfigError(f"the label map {path!r} must be a JSON object of names, e.g. "
                          f'{{"circle": "person", "square": "car"}}')
    return {k: v.strip() for k, v in doc.items()}
