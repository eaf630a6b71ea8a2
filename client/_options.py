"""Connection flags shared by every command line of the client (CLI and web backend).

Each flag is written once here, with its environment default; :func:`config_from_args`
turns the parsed flags into the one frozen :class:`ClientConfig`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from ._config import PROTOCOLS, ClientConfig

# The argparse types are every command line's of this package: detect-client, its
# bench command and detect-web.
__all__ = ["ENVIRONMENT_HELP", "add_connection_arguments", "config_from_args", "fraction",
           "non_negative_int", "positive_float", "positive_int"]

#: The environment variables that give the connection flags their defaults, as a line
#: for a parser's epilog.
ENVIRONMENT_HELP = ("environment: DETECT_CLIENT_URL, DETECT_CLIENT_MODEL, DETECT_CLIENT_PROTOCOL "
                    "and\nDETECT_CLIENT_TOKEN give defaults for --url, --model, --protocol and "
                    "--token.")


def add_connection_arguments(parser: argparse.ArgumentParser,
                             env: Mapping[str, str] | None = None) -> None:
    """Adds the ``connection`` flags (``--url`` ... ``--retries``) to ``parser``.

    Args:
        parser: The parser to extend.
        env: Where the defaults come from; ``os.environ`` when None.
    """
    env = os.environ if env is None else env
    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=env.get("DETECT_CLIENT_URL", "http://127.0.0.1:8080"),
                       help="REST base URL of the server or ingress (default: %(default)s)")
    group.add_argument("--model", default=env.get("DETECT_CLIENT_MODEL", "detector"),
                       help="model name (default: %(default)s)")
    group.add_argument("--protocol", choices=PROTOCOLS,
                       default=env.get("DETECT_CLIENT_PROTOCOL", "v2"),
                       help="wire protocol (default: %(default)s)")
    group.add_argument("--grpc-url", metavar="HOST:PORT",
                       help="gRPC target; default: the --url host, port 8081 when --url uses "
                            "8080, else the --url port (grpcs://HOST:PORT for TLS)")
    group.add_argument("--host-header", metavar="HOST",
                       help="Host header (gRPC authority) for an ingress, e.g. "
                            "detector.default.example.com")
    group.add_argument("--token", default=env.get("DETECT_CLIENT_TOKEN"),
                       help="bearer token (prefer DETECT_CLIENT_TOKEN: flags show in ps)")
    group.add_argument("--ca-file", metavar="PEM", help="CA certificate to trust for TLS")
    group.add_argument("--timeout", type=positive_float, default=30.0,
                       help="seconds per request (default: %(default)s)")
    group.add_argument("--retries", type=non_negative_int, default=3,
                       help="retries on 429/503/unreachable, with backoff (default: %(default)s)")


def config_from_args(args: argparse.Namespace, **settings: Any) -> ClientConfig:
    """The :class:`ClientConfig` for parsed connection flags; ``settings`` adds fields.

    Raises:
        ConfigError: A flag's value is invalid (the message says which and how to fix it).
    """
    return ClientConfig(
        url=args.url, model=args.model, protocol=args.protocol, grpc_url=args.grpc_url,
        host_header=args.host_header, token=args.token, ca_file=args.ca_file,
        timeout=args.timeout, retries=args.retries, **settings,
    )


def non_negative_int(text: str) -> int:
    """argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number, 0 or more")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number, 1 or more")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (seconds, megabytes...)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def fraction(text: str) -> float:
    """argparse type: a number from 0 to 1 (a score threshold)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number from 0 to 1")
    return value
