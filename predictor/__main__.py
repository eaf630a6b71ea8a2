"""``python -m predictor``: load the detector, then serve it with KServe's ModelServer."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from .config import ServerConfig, add_arguments, from_args

log = logging.getLogger("predictor")


def build_parser() -> argparse.ArgumentParser:
    """KServe's own flags plus the detector's."""
    from kserve import model_server

    parser = argparse.ArgumentParser(
        prog="python -m predictor", parents=[model_server.parser],
        description="Serve a torchvision detection model over KServe V1, V2 REST and gRPC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.set_defaults(model_name="detector")
    add_arguments(parser)
    return parser


def serve(cfg: ServerConfig, args: argparse.Namespace) -> int:
    """Loads the model and serves until stopped; returns the exit code."""
    from kserve import ModelServer

    from . import kserve_compat
    from .loader import LoadError
    from .metrics import Metrics
    from .model import DetectionModel

    if args.workers != 1:
        print("--workers must be 1: one process owns the model and its batcher; scale with "
              "replicas instead", file=sys.stderr)
        return 2
    metrics = Metrics()
    model = DetectionModel(cfg, metrics)
    try:
        model.load()
    except (LoadError, RuntimeError, OSError) as exc:
        log.error("cannot load the model: %s", exc)
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 2
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1,
                         enable_grpc=args.enable_grpc, grace_period=args.grace_period)
    kserve_compat.install(server, model, max_body_bytes=cfg.limits.max_body_bytes,
                          grace_period=args.grace_period, on_reject=metrics.reject,
                          on_disconnect=lambda: metrics.reject("client_disconnected"))
    server.start([model])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    parser = build_parser()
    parser.add_argument("--grace_period", type=int, default=30,
                        help="seconds to finish in-flight requests after SIGTERM")
    args = parser.parse_args(argv)
    cfg = from_args(args)
    # Hostile images make PIL warn (corrupt EXIF, odd palettes); the request gets its
    # answer either way, and the warnings would flood the log. Filtered here, at the
    # edge, because catch_warnings() is not thread-safe in the decode threads.
    warnings.filterwarnings("ignore", module="PIL")
    return serve(cfg, args)


if __name__ == "__main__":
    sys.exit(main())
