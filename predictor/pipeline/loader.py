"""Builds a torchvision detector and loads its weights from a model directory.

Every failure raises :class:`LoadError` naming the file and what was expected, so a
bad ``storageUri`` stops the server at start with one readable line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision

from ..config import DEMO_MODEL_DIR, ModelConfig
from .default_boxes import AnchorError, apply_anchors
from .engines import WEIGHT_SUFFIXES, LoadError

log = logging.getLogger(__name__)

# Builders whose score cut and detection cap are called box_* (the R-CNN family).
_RCNN_PREFIXES = ("fasterrcnn", "maskrcnn", "keypointrcnn")




@dataclass
class LoadedModel:
    """A ready-to-run detector and what is known about it."""

    module: torch.nn.Module
    architecture: str
    labels: list[str]
    source: str
    scripted: bool = False
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def detection_architectures() -> list[str]:
    """All torchvision detection builders this server can serve."""
    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def _read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise LoadError(f"{path}: expected a JSON object with 'architecture', 'num_classes'")
    return data


def save_model_folder(folder: Path, state: Mapping[str, torch.Tensor], architecture: str,
                      labels: Sequence[str], *, fmt: str = "safetensors", half: bool = False,
                      model_kwargs: Mapping[str, Any] | None = None,
                      anchors: Mapping[str, Any] | None = None,
                      version: str | None = None) -> Path:
    """Writes the layout :func:`load_model` reads: weights, ``config.json``, ``labels.txt``.

    The one writer of that layout (training, the benchmark and the tests use it), so the
    two sides cannot drift apart. Returns the weights file's path.

    Args:
        folder: Created when missing; files already there are replaced.
        state: The model's ``state_dict``.
        architecture: The torchvision builder's name.
        labels: Class names, the background first.
        fmt: ``"safetensors"`` (preferred) or ``"pt"`` (a ``torch.save`` state_dict).
        half: Store floating tensors as float16 (half the file) where they stay finite;
            ``load_state_dict`` casts back on copy.
        model_kwargs: Extra builder arguments (``config.json``'s ``model_kwargs``).
        anchors: SSD default-box sizes the builder does not take (``config.json``'s
            ``anchors``, see :mod:`predictor.pipeline.default_boxes`).
        version: The model version to announce; by default a digest of the weights.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            cast = value.half()
            value = cast if bool(torch.isfinite(cast).all()) else value
        tensors[name] = value
    if fmt not in ("safetensors", "pt"):
        raise ValueError(f"fmt must be 'safetensors' or 'pt', got {fmt!r}")
    weights = folder / f"model.{fmt}"
    tmp = weights.with_suffix(".tmp")
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(tmp), metadata={"architecture": architecture})
    else:
        torch.save(tensors, tmp)
    tmp.chmod(0o644)  # safetensors writes 0600; the image runs as another user
    os.replace(tmp, weights)
    config: dict[str, Any] = {"architecture": architecture, "num_classes": len(labels),
                              "weights": weights.name}
    if model_kwargs:
        config["model_kwargs"] = dict(model_kwargs)
    if anchors:
        config["anchors"] = dict(anchors)
    if version is not None:
        config["version"] = version
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return weights


def model_version(config: dict[str, Any], weights: Path) -> str:
    """config.json's ``version``, else the first 12 hex digits of the weights' SHA-256.

    Every response names it, so a canary rollout shows which weights answered.
    """
    declared = config.get("version")
    if declared is not None:
        if not isinstance(declared, (str, int)) or isinstance(declared, bool) or not str(declared):
            raise LoadError(f"config.json: \"version\" must be a non-empty string, "
                            f"got {declared!r}")
        return str(declared)
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def _read_labels(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"{path}: cannot read label map ({exc})") from exc
    names = [line.strip() for line in lines]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise LoadError(f"{path}: label map is empty; expected one name per line, "
                        f"line 0 the background")
    return names


def resolve_model_dir(cfg: ModelConfig) -> Path:
    """The folder to load from: ``--model_dir``; the demo detector only when asked for.

    A missing or empty folder is what a wrong ``storageUri`` or PVC path leaves behind, so
    it stops the server (unless ``--demo_if_empty`` asks for the demo): a toy model behind
    a green readiness probe would be worse than a pod that does not start.
    """
    model_dir = Path(cfg.model_dir)
    missing = not model_dir.exists()
    if cfg.architecture is None and (missing or (model_dir.is_dir()
                                                 and not any(model_dir.iterdir()))):
        if cfg.demo_if_empty:
            log.warning("--model_dir %s is %s: serving the embedded demo detector (%s), as "
                        "--demo_if_empty asks", model_dir, "missing" if missing else "empty",
                        DEMO_MODEL_DIR)
            return DEMO_MODEL_DIR
        raise LoadError(
            f"--model_dir {model_dir} is {'missing' if missing else 'empty'}: there is no model "
            f"to serve. Check the InferenceService's storageUri (or the PVC path), mount a "
            f"model folder there, or pass --demo_if_empty to serve the embedded demo detector")
    if not model_dir.is_dir():
        if cfg.weights and not model_dir.exists():
            # --architecture, --num_classes and --weights FILE need no folder at all.
            return model_dir
        raise LoadError(f"--model_dir {model_dir} is not a folder")
    return model_dir


def _find_weights(model_dir: Path, config: dict[str, Any], cfg: ModelConfig) -> Path | None:
    if cfg.weights:
        path = Path(cfg.weights)
        if not path.is_file():
            raise LoadError(f"--weights {path}: no such file")
        return path
    if config.get("weights"):
        path = model_dir / str(config["weights"])
        if not path.is_file():
            raise LoadError(f"{model_dir / 'config.json'} names weights file {path.name}, "
                            f"which is not in {model_dir}")
        return path
    found = sorted(p for p in model_dir.iterdir()
                   if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise LoadError(f"{model_dir} holds several weight files ({names}); name one in "
                        f"config.json as \"weights\"")
    return found[0] if found else None


def _is_torchscript(path: Path) -> bool:
    if path.suffix in (".torchscript", ".ts"):
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


def _builder_kwargs(architecture: str, cfg: ModelConfig, config: dict[str, Any],
                    num_classes: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(config.get("model_kwargs") or {})
    kwargs["num_classes"] = num_classes
    # The model's own cut must be at or below the lowest threshold a request may ask for.
    if architecture.startswith(_RCNN_PREFIXES):
        kwargs["box_score_thresh"] = cfg.min_score_threshold
        kwargs["box_detections_per_img"] = cfg.max_detections
    else:
        kwargs["score_thresh"] = cfg.min_score_threshold
        kwargs["detections_per_img"] = cfg.max_detections
    return kwargs


def _build(architecture: str, kwargs: dict[str, Any], weights: Any = None) -> torch.nn.Module:
    if architecture not in detection_architectures():
        raise LoadError(f"unknown architecture {architecture!r}; torchvision detection "
                        f"builders are: {', '.join(detection_architectures())}")
    try:
        module: torch.nn.Module = torchvision.models.get_model(
            architecture, weights=weights, weights_backbone=None, **kwargs)
    except TypeError as exc:
        raise LoadError(f"cannot build {architecture} with {kwargs}: {exc}") from exc
    return module


def _pretrained(architecture: str, name: str, cfg: ModelConfig) -> LoadedModel:
    enum = torchvision.models.get_model_weights(architecture)
    try:
        weights = enum.DEFAULT if name == "DEFAULT" else enum[name]
    except KeyError as exc:
        raise LoadError(f"--weights {name}: {architecture} has weights "
                        f"{', '.join(w.name for w in enum)} and DEFAULT") from exc
    labels = list(weights.meta["categories"])
    kwargs = _builder_kwargs(architecture, cfg, {}, len(labels))
    kwargs.pop("num_classes")
    try:
        module = _build(architecture, kwargs, weights)
    except (OSError, RuntimeError) as exc:
        raise LoadError(f"cannot download {architecture} weights {weights} ({exc}); "
                        f"without internet, put weights in --model_dir") from exc
    return LoadedModel(module, architecture, labels, f"torchvision {weights}",
                       version=f"torchvision-{weights.name}")


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message suggests weights_only=False, which would run pickled code.
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise LoadError(f"{path}: cannot read weights ({type(exc).__name__}: {first}); expected "
                        f"a safetensors file or a state_dict saved with torch.save (read "
                        f"with weights_only=True, so no pickled code runs)") from exc
    # A training checkpoint often wraps the state_dict.
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LoadError(f"{path}: expected a state_dict (a mapping of names to tensors), "
                        f"got {type(obj).__name__}")
    return obj


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Builds the detector described by ``cfg`` and loads its weights (on the CPU)."""
    if cfg.weights and not Path(cfg.weights).exists() and "/" not in cfg.weights:
        if not cfg.architecture:
            raise LoadError(f"--weights {cfg.weights} needs --architecture")
        return _pretrained(cfg.architecture, cfg.weights, cfg)

    model_dir = resolve_model_dir(cfg)
    config = _read_config(model_dir)
    labels_path = Path(cfg.labels_file) if cfg.labels_file else model_dir / "labels.txt"
    labels: list[str] | None = None
    if labels_path.is_file():
        labels = _read_labels(labels_path)
    elif cfg.labels_file:
        raise LoadError(f"--labels {labels_path}: no such file")
    elif isinstance(config.get("labels"), list):
        labels = [str(x) for x in config["labels"]]

    weights_path = _find_weights(model_dir, config, cfg)
    if weights_path is None:
        raise LoadError(f"{model_dir}: no weights file; expected one of "
                        f"{', '.join('*' + s for s in WEIGHT_SUFFIXES)}")

    if _is_torchscript(weights_path):
        if not cfg.allow_torchscript:
            raise LoadError(f"{weights_path} is a TorchScript archive, which runs code from the "
                            f"file; pass --allow_torchscript to load it")
        try:
            module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(weights_path), map_location="cpu")
        except Exception as exc:
            raise LoadError(f"{weights_path}: cannot load TorchScript ({exc})") from exc
        scripted_arch = cfg.architecture or str(config.get("architecture", "torchscript"))
        names = labels or [f"class_{i}" for i in range(int(config.get("num_classes", 91)))]
        return LoadedModel(module, scripted_arch, names, str(weights_path), scripted=True,
                           version=model_version(config, weights_path))

    architecture = cfg.architecture or config.get("architecture")
    if not architecture:
        raise LoadError(f"{model_dir}: the architecture is unknown; put \"architecture\" in "
                        f"config.json or pass --architecture")
    num_classes = cfg.num_classes or config.get("num_classes") or (len(labels) if labels else None)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise LoadError(f"{model_dir}: number of classes unknown or invalid ({num_classes!r}); "
                        f"set \"num_classes\" in config.json or pass --num_classes")
    if labels is not None and len(labels) != num_classes:
        raise LoadError(f"{labels_path} names {len(labels)} classes but the model has "
                        f"{num_classes} (including the background)")
    module = _build(str(architecture), _builder_kwargs(str(architecture), cfg, config,
                                                       num_classes), None)
    if "anchors" in config:
        try:
            apply_anchors(module, config["anchors"])
        except AnchorError as exc:
            raise LoadError(f"{model_dir / 'config.json'}: {exc}") from exc
    state = _state_dict(weights_path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise LoadError(f"{weights_path} does not match {architecture} with {num_classes} "
                        f"classes: {' '.join(first)[:600]}") from exc
    names = labels or ["__background__"] + [f"class_{i}" for i in range(1, num_classes)]
    return LoadedModel(module, str(architecture), names, str(weights_path),
                       version=model_version(config, weights_path))
