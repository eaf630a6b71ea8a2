"""Client for the object-detection model served by KServe.

One client class per style (:class:`DetectionClient`, :class:`AsyncDetectionClient`),
three protocols chosen by one argument (``"v1"``, ``"v2"``, ``"grpc"``), typed results,
and one exception tree rooted at :class:`ClientError`. A program with its own command
line (``client.web`` is one) takes the same connection flags as ``detect-client`` with
:func:`add_connection_arguments` and :func:`config_from_args`. Never imports torch,
kserve or the server.

Example::

    from client import DetectionClient

    with DetectionClient("http://127.0.0.1:8080", model="detector") as client:
        result = client.detect_one("street.jpg", score_threshold=0.5)
        for det in result.detections:
            print(det.label, round(det.score, 2), det.box)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from ._async import AsyncDetectionClient
from ._client import DetectionClient
from ._config import PROTOCOLS, ClientConfig, Protocol
from ._exceptions import (
    BadRequest,
    ClientError,
    ConfigError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    RequestTimeout,
    ServerError,
    ServerRejected,
    ServerUnreachable,
    Unauthorized,
    UnreadableInput,
)
from ._options import (
    ENVIRONMENT_HELP,
    add_connection_arguments,
    config_from_args,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
)
from ._repository import ModelEntry
from ._types import Detection, Health, ImageInput, ImageResult, ModelMetadata, TensorSpec

try:  # the one version is pyproject.toml's, read from the installed distribution
    __version__ = _version("kserve-detector")
except _NotInstalled:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ENVIRONMENT_HELP",
    "PROTOCOLS",
    "AsyncDetectionClient",
    "BadRequest",
    "ClientConfig",
    "ClientError",
    "ConfigError",
    "Detection",
    "DetectionClient",
    "Health",
    "ImageInput",
    "ImageResult",
    "ModelEntry",
    "ModelMetadata",
    "ModelNotFound",
    "ModelNotReady",
    "Overloaded",
    "Protocol",
    "RequestTimeout",
    "ServerError",
    "ServerRejected",
    "ServerUnreachable",
    "TensorSpec",
    "Unauthorized",
    "UnreadableInput",
    "__version__",
    "add_connection_arguments",
    "config_from_args",
    "fraction",
    "non_negative_int",
    "positive_float",
    "positive_int",
]
