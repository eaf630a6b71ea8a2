"""Client settings: one frozen object, checked when it is built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ._exceptions import ConfigError

__all__ = ["PROTOCOLS", "ClientConfig", "Protocol"]

Protocol = Literal["v1", "v2", "grpc"]
PROTOCOLS: tuple[str, ...] = ("v1", "v2", "grpc")

# KServe's model server listens for REST on 8080 and gRPC on 8081.
_KSERVE_HTTP_PORT = 8080
_KSERVE_GRPC_PORT = 8081


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Where the model is and how to talk to it.

    Attributes:
        url: REST base URL, e.g. ``http://127.0.0.1:8080`` or an ingress URL.
            A URL without a scheme gets ``http://``.
        model: Model name, as the server serves it.
        protocol: ``"v1"`` (KServe V1 JSON), ``"v2"`` (Open Inference Protocol REST,
            binary tensors) or ``"grpc"`` (Open Inference Protocol gRPC).
        grpc_url: gRPC target ``host:port`` (``grpcs://host:port`` for TLS). By default
            the REST host with port 8081 when the REST URL uses KServe's port 8080,
            otherwise the REST URL's own host and port (an ingress serves both).
        host_header: ``Host`` header (gRPC ``:authority``) to send, for an ingress that
            routes by host name while the URL names an IP address.
        token: Bearer token sent as ``Authorization: Bearer <token>``.
        ca_file: PEM file of the CA that signed the server's certificate.
        timeout: Seconds to wait for each request.
        retries: Extra attempts after a retryable failure (0 disables retries).
        backoff: First wait between attempts in seconds; doubles on each retry.
        max_backoff: Longest wait between attempts, also the cap on ``Retry-After``.
        batch_size: Images per request; longer lists are split.
        headers: Extra HTTP headers (gRPC metadata) sent with every request.
    """

    url: str = "http://127.0.0.1:8080"
    model: str = "detector"
    protocol: Protocol = "v2"
    grpc_url: str | None = None
    host_header: str | None = None
    token: str | None = None
    ca_file: str | None = None
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 0.5
    max_backoff: float = 30.0
    batch_size: int = 8
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        url = self.url.strip()
        if url and "://" not in url:
            url = f"http://{url}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"url {self.url!r} is not an HTTP URL; give one like http://127.0.0.1:8080"
            )
        object.__setattr__(self, "url", url.rstrip("/"))
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"protocol {self.protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}"
            )
        if not self.model or "/" in self.model or self.model != self.model.strip():
            raise ConfigError(f"model name {self.model!r} is invalid; give the served name")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.retries < 0:
            raise ConfigError(f"retries must be 0 or more, got {self.retries}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError("backoff and max_backoff must be 0 or more seconds")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.ca_file is not None and not os.path.isfile(self.ca_file):
            raise ConfigError(f"CA file {self.ca_file!r} does not exist; give a PEM file")
        if self.token is not None and (not self.token.strip() or "\n" in self.token):
            raise ConfigError("token is empty or spans lines; give the bare token")
        self.grpc_target()  # validates grpc_url early

    @property
    def uses_tls(self) -> bool:
        """Whether the REST URL is HTTPS."""
        return self.url.startswith("https://")

    def grpc_target(self) -> tuple[str, bool]:
        """The gRPC ``host:port`` and whether to use TLS."""
        if self.grpc_url is None:
            parts = urlsplit(self.url)
            host = _bracket(parts.hostname or "")
            if parts.port is None:
                default_port = 443 if self.uses_tls else 80
            elif parts.port == _KSERVE_HTTP_PORT:
                default_port = _KSERVE_GRPC_PORT
            else:
                default_port = parts.port
            return f"{host}:{default_port}", self.uses_tls
        raw = self.grpc_url.strip()
        scheme, _, rest = raw.rpartition("://")
        if scheme in ("grpcs", "https"):
            tls = True
        elif scheme in ("grpc", "http"):
            tls = False
        elif scheme == "":
            tls = self.uses_tls or self.ca_file is not None
        else:
            raise ConfigError(
                f"grpc_url {raw!r} has an unknown scheme; use host:port or grpcs://host:port"
            )
        parts = urlsplit(f"//{rest.rstrip('/')}")
        port: int | None
        try:
            port = parts.port
        except ValueError:
            port = None
            parts = urlsplit("//")
        if not parts.hostname:
            raise ConfigError(f"grpc_url {raw!r} has no host; give host:port like 127.0.0.1:8081")
        if port is None:
            if not scheme:
                raise ConfigError(
                    f"grpc_url {raw!r} has no port; give host:port like 127.0.0.1:8081"
                )
            port = 443 if tls else 80
        return f"{_bracket(parts.hostname)}:{port}", tls

    def auth_headers(self) -> dict[str, str]:
        """``Authorization`` and ``Host`` headers, plus the extra ``headers``."""
        out = dict(self.headers)
        if self.token:
            out["Authorization"] = f"Bearer {self.token.strip()}"
        if self.host_header:
            out["Host"] = self.host_header
        return out


def _bracket(host: str) -> str:
    """Puts an IPv6 literal back in brackets, as targets and URLs need."""
    return f"[{host}]" if ":" in host else host
