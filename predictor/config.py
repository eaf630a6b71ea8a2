"""Server configuration: one frozen object, built once from the command line.

The flags extend KServe's own parser (``--model_name``, ``--http_port``,
``--grpc_port``, ``--workers``...), so a user who knows KServe finds the usual names.
Nothing below ``__main__`` reads ``sys.argv`` or the environment.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_DIR = "/mnt/models"
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo" / "model"


@dataclass(frozen=True)
class Limits:
    """Input limits; each one is a flag and each one is named in its 4xx error."""

    max_image_pixels: int = 40_000_000
    max_image_side: int = 16_384
    max_images_per_request: int = 64
    max_body_bytes: int = 64 * 1024 * 1024
    max_batch_pixels: int = 200_000_000


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are grouped into batches and how much may wait."""

    max_batch_size: int = 8
    max_batch_delay_ms: float = 5.0
    max_queue_size: int = 256
    request_timeout_ms: float = 30_000.0
    decode_threads: int = 2
    inference_workers: int = 1
    group_by_aspect_ratio: bool = False


@dataclass(frozen=True)
class ModelConfig:
    """What to load and how to run it."""

    model_dir: str = DEFAULT_MODEL_DIR
    architecture: str | None = None
    num_classes: int | None = None
    labels_file: str | None = None
    weights: str | None = None
    allow_torchscript: bool = False
    device: str = "auto"
    fp16: bool = False
    channels_last: bool = False
    fuse_conv_bn: bool = True
    cpu_accel: bool = True
    cache_dir: str = "/tmp/kserve-detector"
    gpu_decode: bool = False
    torch_threads: int | None = None
    score_threshold: float = 0.5
    min_score_threshold: float = 0.05
    max_detections: int = 100
    warmup_batch_sizes: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``python -m predictor`` was told, in one place."""

    model_name: str = "detector"
    model: ModelConfig = ModelConfig()
    limits: Limits = Limits()
    batching: BatchingConfig = BatchingConfig()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _auto_or_positive(text: str) -> int | None:
    """``auto`` (None: derived from the CPUs the server has) or a positive integer."""
    if text.strip().lower() == "auto":
        return None
    try:
        return _positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got {text}"
                                         ) from None


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text}") from exc
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive, got {text}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the detector's own flags to ``parser`` (KServe's flags come from its parent)."""
    model = parser.add_argument_group("model")
    model.add_argument("--model_dir", default=DEFAULT_MODEL_DIR,
                       help="folder with weights, config.json and labels.txt "
                            "(KServe's storage initializer fills /mnt/models); when it is "
                            "missing or empty the embedded demo detector is served")
    model.add_argument("--architecture", default=None,
                       help="torchvision detection builder, e.g. fasterrcnn_resnet50_fpn_v2 "
                            "(overrides config.json)")
    model.add_argument("--num_classes", type=_positive_int, default=None,
                       help="number of classes including background (overrides config.json)")
    model.add_argument("--labels", dest="labels_file", default=None,
                       help="label map: one name per line, line 0 is the background")
    model.add_argument("--weights", default=None,
                       help="'DEFAULT' (or a torchvision weights enum name) to download "
                            "torchvision's pretrained weights; or a weights file path")
    model.add_argument("--allow_torchscript", action="store_true",
                       help="allow loading a TorchScript archive (runs code from the file)")
    model.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="auto: CUDA when available")
    model.add_argument("--fp16", action="store_true",
                       help="run the model under fp16 autocast on CUDA")
    model.add_argument("--channels_last", action="store_true",
                       help="channels_last memory format on CUDA")
    model.add_argument("--no_fuse_conv_bn", dest="fuse_conv_bn", action="store_false",
                       help="keep BatchNorm layers separate (by default each one that follows "
                            "a convolution is folded into it: same outputs, faster)")
    model.add_argument("--gpu_decode", action="store_true",
                       help="decode JPEGs with torchvision on the model's device (nvJPEG on "
                            "CUDA); other formats still go through PIL")
    model.add_argument("--torch_threads", type=_auto_or_positive, default=None,
                       help="torch intra-op threads per inference worker; auto: the CPUs the "
                            "server may use (cgroup quota, affinity) divided among the workers")
    model.add_argument("--no_cpu_accel", dest="cpu_accel", action="store_false",
                       help="run the model eager on a CPU (by default its backbone and head are "
                            "traced, frozen and fused by oneDNN, checked against eager at load)")
    model.add_argument("--cache_dir", default=ModelConfig.cache_dir,
                       help="where the CPU path keeps its traced model parts between starts "
                            "(private to the user; '' for none)")
    model.add_argument("--score_threshold", type=_probability, default=0.5,
                       help="default minimum score of a returned detection")
    model.add_argument("--min_score_threshold", type=_probability, default=0.05,
                       help="lowest score_threshold a request may ask for (the model's "
                            "internal cut)")
    model.add_argument("--max_detections", type=_positive_int, default=100,
                       help="default and upper limit of detections per image")
    model.add_argument("--warmup_batch_sizes", type=_int_list, default=(1,),
                       help="batch sizes run once at load, e.g. 1,8")

    limits = parser.add_argument_group("limits")
    limits.add_argument("--max_image_pixels", type=_positive_int, default=Limits.max_image_pixels,
                        help="pixels per image, checked from the header before decoding")
    limits.add_argument("--max_image_side", type=_positive_int, default=Limits.max_image_side,
                        help="pixels per side of an image")
    limits.add_argument("--max_images_per_request", type=_positive_int,
                        default=Limits.max_images_per_request, help="images in one request")
    limits.add_argument("--max_body_bytes", type=_positive_int, default=Limits.max_body_bytes,
                        help="largest request body (REST) and gRPC message")
    limits.add_argument("--max_batch_pixels", type=_positive_int,
                        default=Limits.max_batch_pixels,
                        help="decoded pixels held by one batch")

    batching = parser.add_argument_group("batching")
    batching.add_argument("--max_batch_size", type=_positive_int,
                          default=BatchingConfig.max_batch_size,
                          help="most images the model runs at once")
    batching.add_argument("--max_batch_delay_ms", type=_non_negative_float,
                          default=BatchingConfig.max_batch_delay_ms,
                          help="longest wait for a batch to fill")
    batching.add_argument("--max_queue_size", type=_positive_int,
                          default=BatchingConfig.max_queue_size,
                          help="images waiting for the model before new requests get 503")
    batching.add_argument("--request_timeout_ms", type=_non_negative_float,
                          default=BatchingConfig.request_timeout_ms,
                          help="a request still queued after this gets 504 (0: no limit)")
    batching.add_argument("--inference_workers", type=_auto_or_positive, default=None,
                          help="batches run at the same time; auto: on a CPU one per CPU the "
                               "server may use (up to 4; with --torch_threads N, the CPUs / N), "
                               "on CUDA one")
    batching.add_argument("--group_by_aspect_ratio", action="store_true",
                          help="batch images of similar aspect ratio together (the R-CNN "
                               "family pads a batch to its largest height and width)")
    batching.add_argument("--decode_threads", type=_positive_int,
                          default=BatchingConfig.decode_threads,
                          help="threads decoding images in parallel")


def from_args(args: argparse.Namespace, workers: int | None = None,
              threads: int | None = None) -> ServerConfig:
    """Builds the frozen configuration from parsed flags.

    ``workers`` and ``threads`` are the resolved values of ``auto`` flags (see
    ``predictor.cpus``); without them an ``auto`` flag means one worker and torch's own
    thread count.
    """
    if args.min_score_threshold > args.score_threshold:
        raise SystemExit(
            f"--min_score_threshold ({args.min_score_threshold}) must not exceed "
            f"--score_threshold ({args.score_threshold})"
        )
    model = ModelConfig(
        model_dir=args.model_dir,
        architecture=args.architecture,
        num_classes=args.num_classes,
        labels_file=args.labels_file,
        weights=args.weights,
        allow_torchscript=args.allow_torchscript,
        device=args.device,
        fp16=args.fp16,
        channels_last=args.channels_last,
        fuse_conv_bn=args.fuse_conv_bn,
        gpu_decode=args.gpu_decode,
        torch_threads=threads if threads is not None else args.torch_threads,
        cpu_accel=args.cpu_accel,
        cache_dir=args.cache_dir,
        score_threshold=args.score_threshold,
        min_score_threshold=args.min_score_threshold,
        max_detections=args.max_detections,
        warmup_batch_sizes=tuple(args.warmup_batch_sizes),
    )
    limits = Limits(
        max_image_pixels=args.max_image_pixels,
        max_image_side=args.max_image_side,
        max_images_per_request=args.max_images_per_request,
        max_body_bytes=args.max_body_bytes,
        max_batch_pixels=args.max_batch_pixels,
    )
    batching = BatchingConfig(
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_batch_delay_ms,
        max_queue_size=args.max_queue_size,
        request_timeout_ms=args.request_timeout_ms,
        decode_threads=args.decode_threads,
        inference_workers=workers or args.inference_workers or 1,
        group_by_aspect_ratio=args.group_by_aspect_ratio,
    )
    return ServerConfig(model_name=args.model_name, model=model, limits=limits,
                        batching=batching)
