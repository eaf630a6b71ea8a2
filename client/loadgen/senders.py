"""The load generator's senders: one request per call, each built once up front.

``v1`` and ``v2bin`` go to the inference service over REST, ``grpc`` over gRPC; ``web``
(``POST /api/detect``) and ``deepstack`` (``POST /v1/vision/detection``, the DeepStack
API NVRs call) go to the web backend (``client.web``), which calls the inference service
itself: the same picture one hop further away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._config import ClientConfig
from .._http import HttpAnswer, http_settings

__all__ = ["GRPC_METHOD", "DeepStackSender", "GrpcSender", "HttpSender", "RequestFailed",
           "Target", "WebSender", "make_sender", "server_timing"]

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


class RequestFailed(Exception):
    """One request did not succeed; the message is the error kind shown in the table."""


@dataclass(frozen=True)
class Target:
    """Where to send the load."""

    url: str = "http://127.0.0.1:8080"
    model: str = "detector"
    grpc_target: str = "127.0.0.1:8081"
    grpc_tls: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    web_url: str | None = None
    web_api_key: str | None = field(default=None, repr=False)

    def client_config(self) -> ClientConfig:
        """The client's configuration for this target: one source of channel settings."""
        grpc_url = ("grpcs://" if self.grpc_tls else "") + self.grpc_target
        return ClientConfig(url=self.url, model=self.model, grpc_url=grpc_url,
                            headers=dict(self.headers), timeout=self.timeout)


class HttpSender:
    """V1 or V2-binary requests, built once by the client's own codecs, on one httpx pool."""

    def __init__(self, target: Target, protocol: str, batches: Sequence[Sequence[Any]],
                 options: Any, clients: int) -> None:
        import httpx

        from .._v1 import V1Codec
        from .._v2rest import V2Codec

        self._httpx = httpx
        self._client = httpx.AsyncClient(
            **http_settings(target.client_config()),
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients))
        self._codec = (V1Codec if protocol == "v1" else V2Codec)(target.model)
        self._batches = batches
        self._requests = [self._codec.infer_request(b, options) for b in batches]

    async def __call__(self, index: int) -> Any:
        request = self._requests[index % len(self._requests)]
        try:
            response = await self._client.post(request.path, content=request.content,
                                               headers=dict(request.headers))
        except self._httpx.HTTPError as exc:
            raise RequestFailed(type(exc).__name__) from exc
        if response.status_code != 200:
            raise RequestFailed(f"HTTP {response.status_code}")
        return index, response

    def detections(self, answer: Any) -> int:
        """Detections in an answer returned by a call (parsed as the client parses it)."""
        index, response = answer
        batch = self._batches[index % len(self._batches)]
        answer = HttpAnswer(response.status_code, response.headers, response.content)
        results = self._codec.infer_results(answer, batch)
        return sum(len(r.detections) for r in results)

    def inner_seconds(self, answer: Any) -> float | None:
        """Only the web backend reports an inner call."""
        return None

    async def close(self) -> None:
        await self._client.aclose()


class GrpcSender:
    """Pre-serialized ``ModelInfer`` calls on one channel (no per-call request encoding)."""

    def __init__(self, target: Target, batches: Sequence[Sequence[Any]], options: Any) -> None:
        import grpc

        from .. import _grpc

        self._grpc = grpc
        self._codec = _grpc.GrpcCodec(target.model)
        config = target.client_config()  # the client's own channel settings
        self._channel = _grpc.open_channel(config, grpc.aio)
        self._call = self._channel.unary_unary(GRPC_METHOD)
        self._timeout = target.timeout
        self._metadata = _grpc.request_metadata(config) or None
        self._batches = batches
        self._requests = [self._codec.infer_request(b, options).message.SerializeToString()
                          for b in batches]

    async def __call__(self, index: int) -> Any:
        try:
            content = await self._call(self._requests[index % len(self._requests)],
                                       timeout=self._timeout, metadata=self._metadata)
        except self._grpc.aio.AioRpcError as exc:
            raise RequestFailed(f"gRPC {exc.code().name}") from exc
        return index, content

    def detections(self, answer: Any) -> int:
        """Detections in an answer returned by a call (parsed as the client parses it)."""
        from ..protos import inference_pb2 as pb

        index, content = answer
        response = pb.ModelInferResponse.FromString(content)  # type: ignore[attr-defined]
        results = self._codec.infer_results(response, self._batches[index % len(self._batches)])
        return sum(len(r.detections) for r in results)

    def inner_seconds(self, answer: Any) -> float | None:
        """Only the web backend reports an inner call."""
        return None

    async def close(self) -> None:
        await self._channel.close()


class WebSender:
    """``POST /api/detect`` to the web backend: multipart bodies encoded once."""

    def __init__(self, target: Target, batches: Sequence[Sequence[Any]], options: Any,
                 clients: int) -> None:
        import httpx

        if not target.web_url:
            raise ValueError("the web protocol needs the web backend's URL (--web-url)")
        self._httpx = httpx
        self._client = httpx.AsyncClient(
            base_url=target.web_url.rstrip("/"), timeout=target.timeout,
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients))
        fields = ({"score_threshold": str(options.score_threshold)}
                  if options.score_threshold is not None else {})
        if target.web_api_key:
            fields["api_key"] = target.web_api_key
        self._requests: list[tuple[bytes, dict[str, str]]] = []
        for batch in batches:
            files = [("file", (f"picture-{i}", image.as_encoded(), "application/octet-stream"))
                     for i, image in enumerate(batch)]
            request = httpx.Request("POST", "/api/detect", files=files, data=fields)
            self._requests.append((request.read(), dict(request.headers)))

    async def __call__(self, index: int) -> Any:
        content, headers = self._requests[index % len(self._requests)]
        try:
            response = await self._client.post("/api/detect", content=content, headers=headers)
        except self._httpx.HTTPError as exc:
            raise RequestFailed(type(exc).__name__) from exc
        if response.status_code != 200:
            raise RequestFailed(f"HTTP {response.status_code}")
        return response

    def detections(self, answer: Any) -> int:
        """Detections in an answer returned by a call."""
        return sum(len(result["detections"]) for result in answer.json()["results"])

    def inner_seconds(self, answer: Any) -> float | None:
        """The backend's own call to the inference service, as its answer reports it."""
        return float(answer.json()["timing"]["inference_ms"]) / 1000.0

    async def close(self) -> None:
        await self._client.aclose()


class DeepStackSender:
    """``POST /v1/vision/detection`` to the web backend, as an NVR sends it: one picture
    in the multipart ``image`` field (``min_confidence`` for a score threshold)."""

    path = "/v1/vision/detection"

    def __init__(self, target: Target, batches: Sequence[Sequence[Any]], options: Any,
                 clients: int) -> None:
        import httpx

        if not target.web_url:
            raise ValueError("the deepstack protocol needs the web backend's URL (--web-url)")
        if any(len(batch) != 1 for batch in batches):
            raise ValueError("the deepstack protocol sends one picture per request")
        self._httpx = httpx
        self._client = httpx.AsyncClient(
            base_url=target.web_url.rstrip("/"), timeout=target.timeout,
            limits=httpx.Limits(max_connections=clients, max_keepalive_connections=clients))
        fields = ({"min_confidence": str(options.score_threshold)}
                  if options.score_threshold is not None else {})
        if target.web_api_key:
            fields["api_key"] = target.web_api_key
        self._requests: list[tuple[bytes, dict[str, str]]] = []
        for (image,) in batches:
            files = [("image", ("picture.jpg", image.as_encoded(), "image/jpeg"))]
            request = httpx.Request("POST", self.path, files=files, data=fields)
            self._requests.append((request.read(), dict(request.headers)))

    async def __call__(self, index: int) -> Any:
        content, headers = self._requests[index % len(self._requests)]
        try:
            response = await self._client.post(self.path, content=content, headers=headers)
        except self._httpx.HTTPError as exc:
            raise RequestFailed(type(exc).__name__) from exc
        if response.status_code != 200:
            raise RequestFailed(f"HTTP {response.status_code}")
        return response

    def detections(self, answer: Any) -> int:
        """Predictions in an answer returned by a call."""
        return len(answer.json()["predictions"])

    def inner_seconds(self, answer: Any) -> float | None:
        """The backend's own call to the inference service, from its ``Server-Timing``."""
        return server_timing(answer.headers.get("server-timing", ""), "inference")

    async def close(self) -> None:
        await self._client.aclose()


def server_timing(header: str, name: str) -> float | None:
    """Seconds of the ``name;dur=<ms>`` entry of a ``Server-Timing`` header; None if absent."""
    for entry in header.split(","):
        parts = [p.strip() for p in entry.split(";")]
        if parts[0] != name:
            continue
        for part in parts[1:]:
            key, _, value = part.partition("=")
            if key == "dur":
                try:
                    return float(value) / 1000.0
                except ValueError:
                    return None
    return None


def make_sender(target: Target, protocol: str, batches: Sequence[Sequence[Any]],
                options: Any, clients: int
                ) -> HttpSender | GrpcSender | WebSender | DeepStackSender:
    """The sender for ``protocol``: ``v1``, ``v2bin``, ``grpc``, ``web`` or ``deepstack``."""
    if protocol in ("v1", "v2bin"):
        return HttpSender(target, protocol, batches, options, clients)
    if protocol == "grpc":
        return GrpcSender(target, batches, options)
    if protocol == "web":
        return WebSender(target, batches, options, clients)
    if protocol == "deepstack":
        return DeepStackSender(target, batches, options, clients)
    raise ValueError(f"unknown protocol {protocol!r}; use v1, v2bin, grpc, web or deepstack")
