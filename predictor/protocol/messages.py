"""What a request carries once it is off the wire, and what its answer carries back.

Transport-neutral: V1 JSON, raw bodies, V2 REST (JSON or binary) and V2 gRPC all parse
into a :class:`Request`, and every V2 answer is a :class:`V2Answer` until the
transport that received the request serializes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..pipeline.decode import ImageSource


@dataclass(frozen=True)
class Tensor:
    """A V2 input tensor: JSON or gRPC ``contents`` in ``data``, or the binary bytes in ``raw``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any = None
    raw: bytes | None = None


@dataclass(frozen=True)
class OutputRequest:
    """One output a V2 request asked for; ``binary`` None means the request's default."""

    name: str
    binary: bool | None = None


@dataclass(frozen=True)
class V2Call:
    """What a V2 request asks beyond its images: its id and which outputs, how."""

    id: str = ""
    outputs: tuple[OutputRequest, ...] | None = None  # None: every output
    binary_outputs: bool = False  # REST's binary_data_output; gRPC answers are always raw


@dataclass(frozen=True)
class Request:
    """One inference request: its images, its parameters, and V2 details (None for V1)."""

    sources: list[ImageSource]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    v2: V2Call | None = None


@dataclass(frozen=True)
class OutputTensor:
    """One V2 output, ready for a transport to serialize."""

    name: str
    datatype: str
    array: np.ndarray
    binary: bool


@dataclass(frozen=True)
class V2Answer:
    """A V2 response before serialization: the request's id and its outputs, in order."""

    id: str
    outputs: tuple[OutputTensor, ...]
