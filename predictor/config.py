"""Server configuration: one frozen object, built once from the command line.

Each flag is written once, as a dataclass field: its default is the field's, its help,
type and spelling sit in the field's metadata (:func:`flag`), and both the parser
(:func:`add_arguments`) and the configuration (:func:`from_args`) are derived from the
fields. The flags extend KServe's own parser (``--model_name``, ``--http_port``,
``--grpc_port``, ``--workers``...), so a user who knows KServe finds the usual names.
Nothing below ``__main__`` reads ``sys.argv`` or the environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_MODEL_DIR = "/mnt/models"
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "demo" / "model"
# The demo compiled ahead of time; only the light image has it (its build runs the export).
COMPILED_DEMO_DIR = Path(__file__).resolve().parent / "demo" / "compiled"


@dataclass(frozen=True)
class Flag:
    """How a configuration field appears on the command line."""

    help: str
    type: Callable[[str], Any] | None = None
    name: str | None = None  # when the flag is not --<field name>
    action: str | None = None  # store_true / store_false
    choices: tuple[str, ...] | None = None


def flag(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field that is also a flag (see :class:`Flag` for ``spec``)."""
    return field(default=default, metadata={"flag": Flag(help, **spec)})


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


@dataclass(frozen=True)
class ModelConfig:
    """What to load and how to run it."""

    model_dir: str = flag(
        DEFAULT_MODEL_DIR, "folder with weights, config.json and labels.txt (KServe's storage "
        "initializer fills /mnt/models); a missing or empty folder stops the server at start")
    demo_if_empty: bool = flag(
        False, "serve the embedded demo detector when --model_dir is missing or empty (the "
        "container image's default command asks for it; never set it in production)",
        action="store_true")
    architecture: str | None = flag(
        None, "torchvision detection builder, e.g. fasterrcnn_resnet50_fpn_v2 (overrides "
        "config.json)")
    num_classes: int | None = flag(
        None, "number of classes including background (overrides config.json)",
        type=_positive_int)
    labels_file: str | None = flag(
        None, "label map: one name per line, line 0 is the background", name="--labels")
    weights: str | None = flag(
        None, "'DEFAULT' (or a torchvision weights enum name) to download torchvision's "
        "pretrained weights; or a weights file path")
    allow_torchscript: bool = flag(
        False, "allow loading a TorchScript archive (runs code from the file)",
        action="store_true")
    device: str = flag("auto", "auto: CUDA when available", choices=("auto", "cpu", "cuda"))
    fp16: bool = flag(False, "run the model under fp16 autocast on CUDA", action="store_true")
    channels_last: bool = flag(False, "channels_last memory format on CUDA",
                               action="store_true")
    fuse_conv_bn: bool = flag(
        True, "keep BatchNorm layers separate (by default each one that follows a convolution "
        "is folded into it: same outputs, faster)", name="--no_fuse_conv_bn",
        action="store_false")
    engine: str = flag(
        "auto", "what runs the model: auto picks by --model_dir (a folder from `python -m "
        "predictor.export` runs on OpenVINO without torch; a torchvision folder on torch, "
        "with the CPU engine on a CPU); torch or openvino insist",
        choices=("auto", "torch", "openvino"))
    cpu_accel: bool = flag(
        True, "run the model eager on a CPU (by default its backbone and head run on the CPU "
        "engine, checked against eager at load)", name="--no_cpu_accel",
        action="store_false")
    cpu_precision: str = flag(
        "auto", "precision of the CPU engine; auto: bf16 (or fp16) where the CPU computes it "
        "natively and the load-time check passes, else fp32; int8 needs --calibration_dir",
        choices=("auto", "fp32", "bf16", "fp16", "int8"))
    calibration_dir: str | None = flag(
        None, "a folder of your own pictures: int8 calibrates on them, and the load-time "
        "precision check runs on a few of them")
    draft_decode: bool = flag(
        True, "decode every JPEG at full size (by default a JPEG the model will shrink anyway "
        "is decoded at 1/2, 1/4 or 1/8 scale, never below the model's input size; boxes stay "
        "in the picture's own pixels)", name="--no_draft_decode", action="store_false")
    cache_dir: str = flag(
        "/tmp/kserve-detector", "where the CPU engine keeps its exported and compiled graphs "
        "between starts (private to the user; '' for none)")
    gpu_decode: bool = flag(
        False, "decode JPEGs with torchvision on the model's device (nvJPEG on CUDA); other "
        "formats still go through PIL", action="store_true")
    torch_threads: int | None = flag(
        None, "torch intra-op threads per inference worker; auto: the CPUs the server may use "
        "(cgroup quota, affinity) divided among the workers", type=_auto_or_positive)
    score_threshold: float = flag(0.5, "default minimum score of a returned detection",
                                  type=_probability)
    min_score_threshold: float = flag(
        0.05, "lowest score_threshold a request may ask for (the model's internal cut)",
        type=_probability)
    max_detections: int = flag(100, "default and upper limit of detections per image",
                               type=_positive_int)
    warmup_batch_sizes: tuple[int, ...] = flag(
        (1,), "batch sizes run once at load, e.g. 1,8", type=_int_list)


@dataclass(frozen=True)
class Limits:
    """Input limits; each one is a flag and each one is named in its 4xx error."""

    max_image_pixels: int = flag(
        40_000_000, "pixels per image, checked from the header before decoding",
        type=_positive_int)
    max_image_side: int = flag(16_384, "pixels per side of an image", type=_positive_int)
    max_images_per_request: int = flag(64, "images in one request", type=_positive_int)
    max_body_bytes: int = flag(
        64 * 1024 * 1024, "largest request body (REST, inflated size too) and gRPC message",
        type=_positive_int)
    max_header_bytes: int = flag(
        32 * 1024, "largest REST request head (request line and headers); larger gets 431",
        type=_positive_int)
    max_batch_pixels: int = flag(200_000_000, "decoded pixels held by one batch",
                                 type=_positive_int)


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are grouped into batches and how much may wait."""

    max_batch_size: int = flag(8, "most images the model runs at once", type=_positive_int)
    max_batch_delay_ms: float = flag(5.0, "longest wait for a batch to fill",
                                     type=_non_negative_float)
    max_queue_size: int = flag(
        256, "images waiting for the model before new requests get 503", type=_positive_int)
    request_timeout_ms: float = flag(
        30_000.0, "a request still queued after this gets 504 (0: no limit)",
        type=_non_negative_float)
    inference_workers: int | None = flag(
        None, "batches run at the same time; auto: on a CPU one per CPU the server may use "
        "(up to 4; with --torch_threads N, the CPUs / N), on CUDA one",
        type=_auto_or_positive)
    group_by_aspect_ratio: bool = flag(
        False, "batch images of similar aspect ratio together (the R-CNN family pads a batch "
        "to its largest height and width)", action="store_true")
    decode_threads: int = flag(2, "threads decoding images in parallel", type=_positive_int)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``python -m predictor`` was told, in one place."""

    model_name: str = "detector"  # KServe's own --model_name
    grace_period: int = flag(30, "seconds to finish in-flight requests after SIGTERM",
                             type=int)
    model_repository: str | None = flag(
        None, "serve every model folder under this folder, each under its folder's name, and "
        "load or unload them at run time (POST /v2/repository/models/NAME/load|unload: "
        "KServe's multi-model agent); --model_dir and --model_name are then unused; an empty "
        "folder is fine")
    max_models: int | None = flag(
        None, "with --model_repository: most models loaded at once (each holds its weights "
        "in memory); a load past it is refused with 507", type=_positive_int)
    model: ModelConfig = field(default_factory=ModelConfig)
    limits: Limits = field(default_factory=Limits)
    batching: BatchingConfig = field(default_factory=BatchingConfig)


_GROUPS: tuple[tuple[str, type], ...] = (
    ("server", ServerConfig), ("model", ModelConfig), ("limits", Limits),
    ("batching", BatchingConfig))


def _flags(cls: type) -> list[tuple[str, Any, Flag]]:
    """``(field name, default, Flag)`` for the fields of ``cls`` that are flags."""
    out = []
    for f in fields(cls):
        spec = f.metadata.get("flag")
        if spec is not None:
            default = f.default if f.default is not MISSING else None
            out.append((f.name, default, spec))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the detector's own flags to ``parser`` (KServe's flags come from its parent)."""
    parser.set_defaults(model_name=ServerConfig.model_name)
    for title, cls in _GROUPS:
        group = parser.add_argument_group(title)
        for name, default, spec in _flags(cls):
            kwargs: dict[str, Any] = {"dest": name, "default": default, "help": spec.help}
            if spec.action:
                kwargs["action"] = spec.action
            else:
                if spec.type is not None:
                    kwargs["type"] = spec.type
                if spec.choices:
                    kwargs["choices"] = spec.choices
                if spec.type is _auto_or_positive and default is None:
                    kwargs["default"] = "auto"  # argparse runs string defaults through type
            group.add_argument(spec.name or f"--{name}", **kwargs)


def _build(cls: type[T], args: argparse.Namespace, **nested: Any) -> T:
    values = {name: getattr(args, name) for name, _, _ in _flags(cls)}
    return cls(**values, **nested)


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
    model = _build(ModelConfig, args)
    batching = _build(BatchingConfig, args)
    if threads is not None:
        model = replace(model, torch_threads=threads)
    if workers is not None:
        batching = replace(batching, inference_workers=workers)
    return _build(ServerConfig, args, model_name=args.model_name, model=model,
                  limits=_build(Limits, args), batching=batching)
