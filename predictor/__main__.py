"""``python -m predictor``: load the detector, then serve it with KServe's ModelServer."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from . import cpus
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
    add_arguments(parser)
    return parser


def serve(cfg: ServerConfig, args: argparse.Namespace) -> int:
    """Loads the model and serves until stopped; returns the exit code."""
    from kserve import ModelServer

    from .metrics import Metrics
    from .model import DetectionModel
    from .pipeline.engines import LoadError
    from .server import compat

    if args.workers != 1:
        print("--workers must be 1: one process owns the model and its batcher; scale with "
              "replicas instead", file=sys.stderr)
        return 2
    if cfg.model_repository is not None:
        return serve_repository(cfg, args)
    if cfg.max_models is not None:
        _fatal("--max_models limits a model repository: pass --model_repository DIR too")
        return 2
    metrics = Metrics()
    try:
        model = DetectionModel(cfg, metrics)  # picks the engine: may refuse the folder
        model.load()
    except (LoadError, RuntimeError, OSError) as exc:
        _fatal(f"cannot load the model: {exc}")
        return 2
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1,
                         enable_grpc=args.enable_grpc, grace_period=cfg.grace_period)
    compat.install(server, model, max_body_bytes=cfg.limits.max_body_bytes,
                   max_header_bytes=cfg.limits.max_header_bytes,
                   grace_period=cfg.grace_period, on_reject=metrics.reject,
                   on_disconnect=lambda: metrics.reject("client_disconnected"))
    server.start([model])
    return 0


def serve_repository(cfg: ServerConfig, args: argparse.Namespace) -> int:
    """Serves every model of ``--model_repository`` and loads or unloads them at run time."""
    from pathlib import Path

    from kserve import ModelServer

    from .metrics import Metrics
    from .server import compat
    from .server.repository import DetectorRepository

    assert cfg.model_repository is not None
    root = Path(cfg.model_repository)
    if root.exists() and not root.is_dir():
        _fatal(f"--model_repository {root} is not a folder")
        return 2
    metrics = Metrics(per_model=True)
    repository = DetectorRepository(root, cfg, metrics, cfg.max_models)
    repository.load_all()  # a model that fails is logged and listed UNAVAILABLE in the index
    log.info("model repository %s: serving %s", root, ", ".join(repository.models)
             or "no model yet (POST /v2/repository/models/NAME/load adds one)")
    server = ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1,
                         enable_grpc=args.enable_grpc, grace_period=cfg.grace_period,
                         registered_models=repository)
    compat.install(server, repository, max_body_bytes=cfg.limits.max_body_bytes,
                   max_header_bytes=cfg.limits.max_header_bytes,
                   grace_period=cfg.grace_period, on_reject=metrics.reject,
                   on_disconnect=lambda: metrics.reject("client_disconnected"),
                   repository=repository)
    # KServe refuses to start when none of the models it is given is ready, but not when it
    # is given none (ModelServer._register_and_check_atleast_one_model_is_ready): the models
    # are in its registry already, so an empty repository starts and reports live.
    server.start([])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    _configure_logging(args)
    plan = _cpu_plan(args)
    cfg = from_args(args, plan.workers, plan.threads)
    # Hostile images make PIL warn (corrupt EXIF, odd palettes); the request gets its
    # answer either way, and the warnings would flood the log. Filtered here, at the
    # edge, because catch_warnings() is not thread-safe in the decode threads.
    warnings.filterwarnings("ignore", module="PIL")
    log.info("%d inference worker(s) x %d torch thread(s): %s", plan.workers, plan.threads,
             plan.reason)
    return serve(cfg, args)


def _fatal(message: str) -> None:
    """The one line a failed start leaves on stderr (and so in ``kubectl logs``)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def _configure_logging(args: argparse.Namespace) -> None:
    """KServe's log format before the model loads, for this package's loggers too."""
    from kserve import logging as kserve_logging

    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    ours = logging.getLogger("predictor")
    if not ours.handlers and kserve_logging.logger.handlers:
        for handler in kserve_logging.logger.handlers:
            ours.addHandler(handler)
        ours.setLevel(kserve_logging.logger.level)
        ours.propagate = False


def _cpu_plan(args: argparse.Namespace) -> cpus.Plan:
    """Workers and threads from the CPUs the server has (``auto``) or as given."""
    from pathlib import Path

    from .config import COMPILED_DEMO_DIR
    from .pipeline.compiled import is_compiled

    if args.device == "cuda":
        cuda = True
    elif args.device == "cpu" or args.engine == "openvino" or (
            args.model_dir and is_compiled(Path(args.model_dir))) or (
            args.demo_if_empty and is_compiled(COMPILED_DEMO_DIR)):
        cuda = False  # a compiled folder runs on the CPU: torch is not even imported
    else:
        try:
            import torch
        except ImportError:  # the light runtime: compiled models on the CPU only
            cuda = False
        else:
            cuda = torch.cuda.is_available()
    return cpus.plan(cpus.detect(), cuda=cuda, workers=args.inference_workers,
                     threads=args.torch_threads)


if __name__ == "__main__":
    sys.exit(main())
