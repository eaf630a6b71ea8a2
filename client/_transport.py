"""The client's one I/O seam: a transport sends one request and hands back its answer.

Everything else the clients do is in ``_base`` and the codecs (``_v1``, ``_v2rest``,
``_grpc``), and does no I/O: what to send and how to read what comes back. A transport
only moves a request out and an answer in, as httpx's transports do under its clients:

    DetectionClient ── codec: request ──> Transport.send ──> the server
                    <── codec: results <── answer ─────────┘

:class:`Transport` and :class:`AsyncTransport` declare the seam. Four implementations:
REST over an ``httpx.Client`` or ``httpx.AsyncClient`` (which may itself be given an
httpx transport, e.g. ``httpx.MockTransport``), and gRPC over a ``grpc`` or ``grpc.aio``
channel. A failure with no answer at all (refused, timed out, gRPC status) is raised as
the client's :class:`~client.ClientError`; an HTTP error status is an answer, which the
codec reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ._config import ClientConfig
from ._http import HttpAnswer, HttpRequest, error_for_transport, http_settings

if TYPE_CHECKING:
    import httpx

    from ._grpc import GrpcCall

__all__ = ["AsyncGrpcTransport", "AsyncHttpxTransport", "AsyncTransport", "GrpcTransport",
           "HttpxTransport", "Transport", "open_async_transport", "open_transport"]

RequestT = TypeVar("RequestT", contravariant=True)
AnswerT = TypeVar("AnswerT", covariant=True)


class Transport(Protocol[RequestT, AnswerT]):
    """Sends one request and returns its answer; the sync clients' only I/O."""

    def send(self, request: RequestT) -> AnswerT:
        """The answer to ``request``; raises ClientError when none came."""
        ...

    def close(self) -> None:
        """Closes the connections."""
        ...


class AsyncTransport(Protocol[RequestT, AnswerT]):
    """The awaited twin of :class:`Transport`; the async client's only I/O."""

    async def send(self, request: RequestT) -> AnswerT:
        """The answer to ``request``; raises ClientError when none came."""
        ...

    async def close(self) -> None:
        """Closes the connections."""
        ...


class HttpxTransport:
    """REST over one ``httpx.Client``."""

    def __init__(self, config: ClientConfig, transport: httpx.BaseTransport | None) -> None:
        import httpx

        self._httpx = httpx
        self._config = config
        self._http = httpx.Client(**http_settings(config), transport=transport)

    def send(self, request: HttpRequest) -> HttpAnswer:
        """Sends ``request``; any status is an answer."""
        try:
            response = self._http.request(request.method, request.path,
                                          headers=dict(request.headers),
                                          content=request.content)
        except self._httpx.HTTPError as exc:
            raise error_for_transport(exc, self._config.url, self._config.timeout) from None
        return HttpAnswer(response.status_code, response.headers, response.content)

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()


class AsyncHttpxTransport:
    """REST over one ``httpx.AsyncClient``."""

    def __init__(self, config: ClientConfig,
                 transport: httpx.AsyncBaseTransport | None) -> None:
        import httpx

        self._httpx = httpx
        self._config = config
        self._http = httpx.AsyncClient(**http_settings(config), transport=transport)

    async def send(self, request: HttpRequest) -> HttpAnswer:
        """Sends ``request``; any status is an answer."""
        try:
            response = await self._http.request(request.method, request.path,
                                                headers=dict(request.headers),
                                                content=request.content)
        except self._httpx.HTTPError as exc:
            raise error_for_transport(exc, self._config.url, self._config.timeout) from None
        return HttpAnswer(response.status_code, response.headers, response.content)

    async def close(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()


class GrpcTransport:
    """Open Inference Protocol gRPC over one ``grpc`` channel."""

    def __init__(self, config: ClientConfig) -> None:
        from . import _grpc

        self._wire = _grpc
        self._config = config
        self._target, _ = config.grpc_target()
        self._metadata = _grpc.request_metadata(config)
        self._channel = _grpc.open_channel(config, _grpc.grpc)
        self._stub = _grpc.stub(self._channel)

    def send(self, request: GrpcCall) -> Any:
        """Makes the call; a status other than OK raises its ClientError."""
        try:
            return getattr(self._stub, request.method)(
                request.message, timeout=self._config.timeout, metadata=self._metadata)
        except self._wire.grpc.RpcError as exc:
            raise self._wire.error_for_rpc(exc, what=request.what, model=self._config.model,
                                           target=self._target) from None

    def close(self) -> None:
        """Closes the channel."""
        self._channel.close()


class AsyncGrpcTransport:
    """Open Inference Protocol gRPC over one ``grpc.aio`` channel."""

    def __init__(self, config: ClientConfig) -> None:
        from . import _grpc

        self._wire = _grpc
        self._config = config
        self._target, _ = config.grpc_target()
        self._metadata = _grpc.request_metadata(config)
        self._channel = _grpc.open_channel(config, _grpc.grpc.aio)
        self._stub = _grpc.stub(self._channel)

    async def send(self, request: GrpcCall) -> Any:
        """Makes the call; a status other than OK raises its ClientError."""
        try:
            return await getattr(self._stub, request.method)(
                request.message, timeout=self._config.timeout, metadata=self._metadata)
        except self._wire.grpc.RpcError as exc:
            raise self._wire.error_for_rpc(exc, what=request.what, model=self._config.model,
                                           target=self._target) from None

    async def close(self) -> None:
        """Closes the channel."""
        await self._channel.close()


def open_transport(config: ClientConfig, transport: httpx.BaseTransport | None = None
                   ) -> Transport[Any, Any]:
    """The sync transport for ``config.protocol``; ``transport`` serves REST only."""
    if config.protocol == "grpc":
        return GrpcTransport(config)
    return HttpxTransport(config, transport)


def open_async_transport(config: ClientConfig,
                         transport: httpx.AsyncBaseTransport | None = None
                         ) -> AsyncTransport[Any, Any]:
    """The async transport for ``config.protocol``; ``transport`` serves REST only."""
    if config.protocol == "grpc":
        return AsyncGrpcTransport(config)
    return AsyncHttpxTransport(config, transport)
