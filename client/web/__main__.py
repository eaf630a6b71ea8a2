"""``python -m client.web``: the edge. Flags -> one frozen WebSettings -> uvicorn.

The only place that reads the environment and the files the flags name (the API key, the
label map). Example::

    python -m client.web --url http://127.0.0.1:8080 --model detector --port 8000
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from client import (
    ENVIRONMENT_HELP,
    ConfigError,
    add_connection_arguments,
    config_from_args,
    fraction,
    positive_float,
    positive_int,
)

from .settings import (
    DEFAULT_INFERENCE_DEVICE,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_PREDICTIONS,
    DEFAULT_MIN_SCORE_THRESHOLD,
    MIB,
    WebSettings,
    read_api_key,
    read_label_map,
)

__all__ = ["build_parser", "main", "settings_from_args"]

PROG = "python -m client.web"
_MISSING_EXTRA = ("the web backend needs its extra dependencies: "
                  "pip install 'kserve-detector[web]' (missing: {name})")


def build_parser() -> argparse.ArgumentParser:
    """The flags: the client's connection flags, then where to listen and the limits."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="The product's web backend: a page, POST /api/detect and the "
                               "DeepStack detection API in front of the inference service.",
        epilog=ENVIRONMENT_HELP + "\nDETECT_WEB_HOST and DETECT_WEB_PORT give defaults for "
                                  "--host and --port, DETECT_WEB_API_KEY_FILE for "
                                  "--api-key-file.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_connection_arguments(parser)
    env = os.environ
    serve = parser.add_argument_group("web backend")
    serve.add_argument("--host", default=env.get("DETECT_WEB_HOST", "127.0.0.1"),
                       help="address to listen on; 0.0.0.0 for every interface "
                            "(default: %(default)s)")
    serve.add_argument("--port", type=positive_int,
                       default=int(env.get("DETECT_WEB_PORT", "8000")),
                       help="port to listen on (default: %(default)s)")
    serve.add_argument("--max-files", type=positive_int, default=16,
                       help="most pictures per request (default: %(default)s)")
    serve.add_argument("--max-upload-mb", type=positive_float, default=32.0, metavar="MB",
                       help="largest request body in MiB (default: %(default)s)")
    serve.add_argument("--max-backoff", type=positive_float, default=5.0, metavar="SECONDS",
                       help="longest wait before a retry, also the cap on the service's "
                            "Retry-After (default: %(default)s)")
    serve.add_argument("--health-interval", type=positive_float, default=5.0,
                       metavar="SECONDS", help="seconds between two readiness probes of the "
                                               "inference service (default: %(default)s)")
    serve.add_argument("--max-in-flight", "--max_in_flight", type=positive_int,
                       default=DEFAULT_MAX_IN_FLIGHT, metavar="N",
                       help="most pictures held at once, all routes together; beyond it an "
                            "immediate 503 + Retry-After (default: %(default)s, the inference "
                            "service's default --max_queue_size)")
    serve.add_argument("--access-log", action="store_true",
                       help="log a line per request (off: at an NVR's rate that is one write "
                            "per frame; /metrics counts requests by route and status)")
    serve.add_argument("--log-level", default="info",
                       choices=("critical", "error", "warning", "info", "debug"),
                       help="log level (default: %(default)s)")
    deepstack = parser.add_argument_group("DeepStack API and access")
    deepstack.add_argument("--label-map", "--label_map", metavar="FILE",
                           help="JSON object renaming the model's labels in DeepStack answers, "
                                'e.g. {"circle": "person"}; other labels pass through')
    deepstack.add_argument("--api-key-file", "--api_key_file", metavar="FILE",
                           default=env.get("DETECT_WEB_API_KEY_FILE") or None,
                           help="file holding the API key the DeepStack routes require (never "
                                "the key itself on the command line)")
    deepstack.add_argument("--protect-page-api", action="store_true",
                           help="require the API key on POST /api/detect too")
    deepstack.add_argument("--min-score-threshold", type=fraction,
                           default=DEFAULT_MIN_SCORE_THRESHOLD, metavar="S",
                           help="the inference service's --min_score_threshold: a lower "
                                "min_confidence is raised to it (default: %(default)s)")
    deepstack.add_argument("--max-predictions", "--max_predictions", type=positive_int,
                           default=DEFAULT_MAX_PREDICTIONS, metavar="N",
                           help="most predictions in one DeepStack answer, the highest "
                                "confidences kept; Frigate holds 20 (default: %(default)s)")
    deepstack.add_argument("--inference-device", "--inference_device",
                           default=DEFAULT_INFERENCE_DEVICE, metavar="NAME",
                           help="the inference service's device (CPU, GPU...), which "
                                "CodeProject.AI answers show in inferenceDevice "
                                "(default: %(default)s)")
    return parser


def settings_from_args(args: argparse.Namespace) -> WebSettings:
    """The one settings object for parsed flags.

    Raises:
        ConfigError: A value is invalid; the message names the flag.
    """
    client = config_from_args(args, max_backoff=args.max_backoff)
    return WebSettings(client=client, max_files=args.max_files,
                       max_upload_bytes=int(args.max_upload_mb * MIB),
                       health_interval=args.health_interval,
                       probe_timeout=min(args.timeout, args.health_interval, 5.0),
                       max_in_flight=args.max_in_flight,
                       api_key=read_api_key(args.api_key_file) if args.api_key_file else None,
                       protect_page_api=args.protect_page_api,
                       label_map=read_label_map(args.label_map) if args.label_map else {},
                       min_score_threshold=args.min_score_threshold,
                       max_predictions=args.max_predictions,
                       inference_device=args.inference_device.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags and serves until interrupted; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        parser.error(str(exc))
    try:
        import uvicorn

        from .app import create_app
    except ModuleNotFoundError as exc:
        print(f"{PROG}: error: {_MISSING_EXTRA.format(name=exc.name)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s: %(message)s")
    uvicorn.run(create_app(settings), host=args.host, port=args.port,
                log_level=args.log_level, access_log=args.access_log, server_header=False,
                proxy_headers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
