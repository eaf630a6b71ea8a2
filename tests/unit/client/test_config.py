"""ClientConfig: settings are checked when built, with messages that say how to fix them."""

from __future__ import annotations

from pathlib import Path

import pytest

from client import ClientConfig, ConfigError, DetectionClient


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"url": "ftp://host"}, "not an HTTP URL; give one like http://127.0.0.1:8080"),
        ({"protocol": "v3"}, "use one of v1, v2, grpc"),
        ({"model": "a/b"}, "model name 'a/b' is invalid"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"retries": -1}, "retries must be 0 or more"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"ca_file": "/nonexistent/ca.pem"}, "CA file '/nonexistent/ca.pem' does not exist"),
        ({"grpc_url": "localhost"}, "has no port; give host:port"),
        ({"grpc_url": "ftp://h:1"}, "unknown scheme"),
        ({"token": "two\nlines"}, "token is empty or spans lines"),
    ],
)
def test_bad_settings_are_refused_with_a_fix(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ClientConfig(**settings)  # type: ignore[arg-type]


def test_config_errors_surface_from_the_client_constructor() -> None:
    with pytest.raises(ValueError, match="protocol"):
        DetectionClient(protocol="rest")  # type: ignore[arg-type]


def test_url_without_scheme_gets_http_and_loses_trailing_slash() -> None:
    assert ClientConfig(url="localhost:8080/").url == "http://localhost:8080"


@pytest.mark.parametrize(
    ("url", "grpc_url", "target"),
    [
        ("http://127.0.0.1:8080", None, ("127.0.0.1:8081", False)),  # KServe's ports
        ("http://10.0.0.5:31380", None, ("10.0.0.5:31380", False)),  # a NodePort ingress
        ("https://detector.example.com", None, ("detector.example.com:443", True)),
        ("http://detector.example.com", None, ("detector.example.com:80", False)),
        ("http://[::1]:8080", None, ("[::1]:8081", False)),
        ("http://h:8080", "other:9000", ("other:9000", False)),
        ("https://h", "other:9000", ("other:9000", True)),
        ("http://h:8080", "grpcs://secure.example.com", ("secure.example.com:443", True)),
        ("http://h:8080", "grpc://plain:50051", ("plain:50051", False)),
    ],
)
def test_grpc_target_defaults_follow_the_rest_url(url: str, grpc_url: str | None,
                                                  target: tuple[str, bool]) -> None:
    assert ClientConfig(url=url, grpc_url=grpc_url).grpc_target() == target


def test_ca_file_makes_a_bare_grpc_target_use_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a connection is made")
    assert ClientConfig(grpc_url="h:1", ca_file=str(ca)).grpc_target() == ("h:1", True)


def test_auth_headers_do_not_modify_the_callers_dict() -> None:
    extra = {"X-A": "1"}
    config = ClientConfig(token=" tok ", host_header="svc.example.com", headers=extra)
    assert config.auth_headers() == {"X-A": "1", "Authorization": "Bearer tok",
                                     "Host": "svc.example.com"}
    assert extra == {"X-A": "1"}
