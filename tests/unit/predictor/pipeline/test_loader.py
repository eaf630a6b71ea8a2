"""loader: model folders to a ready detector, or one readable LoadError."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from predictor.config import DEMO_MODEL_DIR, ModelConfig
from predictor.pipeline.loader import (
    LoadError,
    detection_architectures,
    load_model,
    resolve_model_dir,
)
from tests.support.servers import TEST_ARCH, TEST_LABELS

NUM_CLASSES = len(TEST_LABELS)


class Scripted(torch.nn.Module):
    """A trivial module, scripted into a TorchScript archive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    model = torchvision.models.get_model(TEST_ARCH, weights=None, weights_backbone=None,
                                         num_classes=NUM_CLASSES)
    return {k: v.clone() for k, v in model.state_dict().items()}


def write_dir(folder: Path, weights: dict[str, object] | None = None, *,
              config: object = None, labels: list[str] | None = TEST_LABELS) -> Path:
    """A model folder; ``weights`` maps file names to a state_dict (or any object)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in (weights or {}).items():
        if name.endswith(".safetensors"):
            save_file(obj, str(folder / name))  # type: ignore[arg-type]
        else:
            torch.save(obj, folder / name)
    if config is None:
        config = {"architecture": TEST_ARCH, "num_classes": NUM_CLASSES}
    (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    return folder


def cfg(folder: Path, **kwargs: object) -> ModelConfig:
    return ModelConfig(model_dir=str(folder), device="cpu", **kwargs)  # type: ignore[arg-type]


def assert_same_weights(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = module.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# ---- weights formats ---------------------------------------------------------------

def test_safetensors_folder_loads_with_labels(tmp_path, state_dict):
    folder = write_dir(tmp_path, {"model.safetensors": state_dict})
    loaded = load_model(cfg(folder))
    assert loaded.architecture == TEST_ARCH
    assert loaded.labels == TEST_LABELS
    assert loaded.source == str(folder / "model.safetensors")
    assert not loaded.scripted
    assert_same_weights(loaded.module, state_dict)
    # The model's own cut follows the server's limits, so requests can ask down to them.
    assert loaded.module.score_thresh == pytest.approx(0.05)
    assert loaded.module.detections_per_img == 100


def test_pt_checkpoint_wrapping_the_state_dict(tmp_path, state_dict):
    folder = write_dir(tmp_path, {"model.pt": {"model": state_dict, "epoch": 3}})
    loaded = load_model(cfg(folder))
    assert_same_weights(loaded.module, state_dict)


def test_pt_state_dict_from_the_weights_flag(tmp_path, state_dict):
    folder = write_dir(tmp_path / "m", config={"architecture": TEST_ARCH}, labels=TEST_LABELS)
    weights = tmp_path / "elsewhere.pth"
    torch.save(state_dict, weights)
    loaded = load_model(cfg(folder, weights=str(weights)))  # num_classes from labels.txt
    assert loaded.source == str(weights)
    assert_same_weights(loaded.module, state_dict)


# ---- TorchScript -------------------------------------------------------------------

@pytest.fixture(scope="module")
def torchscript_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ts") / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still served
        torch.jit.script(Scripted()).save(str(path))
    return path.read_bytes()


def test_torchscript_is_refused_without_the_flag(tmp_path, torchscript_bytes):
    folder = write_dir(tmp_path)
    (folder / "model.pt").write_bytes(torchscript_bytes)  # a .pt name does not hide it
    with pytest.raises(LoadError, match=r"model.pt is a TorchScript archive.*--allow_torchscript"):
        load_model(cfg(folder))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_loads_with_the_flag(tmp_path, torchscript_bytes):
    folder = write_dir(tmp_path)
    (folder / "model.pt").write_bytes(torchscript_bytes)
    loaded = load_model(cfg(folder, allow_torchscript=True))
    assert loaded.scripted
    assert loaded.labels == TEST_LABELS
    assert loaded.architecture == TEST_ARCH
    assert torch.equal(loaded.module(torch.zeros(2)), torch.ones(2))


# ---- errors ------------------------------------------------------------------------

def test_wrong_num_classes_names_the_weights_file(tmp_path, state_dict):
    folder = write_dir(tmp_path, {"model.safetensors": state_dict},
                       config={"architecture": TEST_ARCH, "num_classes": 3},
                       labels=TEST_LABELS[:3])
    with pytest.raises(LoadError, match=r"model.safetensors does not match "
                                        rf"{TEST_ARCH} with 3 classes"):
        load_model(cfg(folder))


def test_missing_weights(tmp_path):
    folder = write_dir(tmp_path)
    with pytest.raises(LoadError, match=r"no weights file; expected one of \*.safetensors"):
        load_model(cfg(folder))


def test_config_names_a_weights_file_that_is_not_there(tmp_path):
    folder = write_dir(tmp_path, config={"architecture": TEST_ARCH, "num_classes": NUM_CLASSES,
                                         "weights": "best.safetensors"})
    with pytest.raises(LoadError, match="names weights file best.safetensors, which is not in"):
        load_model(cfg(folder))


def test_two_weight_files_must_be_chosen_between(tmp_path):
    folder = write_dir(tmp_path)
    (folder / "a.safetensors").write_bytes(b"x")
    (folder / "b.pt").write_bytes(b"x")
    with pytest.raises(LoadError, match=r"several weight files \(a.safetensors, b.pt\); name one"):
        load_model(cfg(folder))


@pytest.mark.parametrize(("config", "message"), [
    ("{not json", "config.json: not valid JSON"),
    ("[1, 2]", "config.json: expected a JSON object"),
    ({"num_classes": NUM_CLASSES}, "architecture is unknown; put \"architecture\" in config"),
    ({"architecture": TEST_ARCH, "num_classes": "five"}, "number of classes unknown or invalid"),
])
def test_bad_config(tmp_path, config, message):
    folder = write_dir(tmp_path, config=config, labels=None)
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LoadError, match=message):
        load_model(cfg(folder))


def test_labels_count_mismatch(tmp_path):
    folder = write_dir(tmp_path, labels=TEST_LABELS + ["hexagon"])
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LoadError, match=r"labels.txt names 6 classes but the model has 5"):
        load_model(cfg(folder))


def test_empty_labels_file(tmp_path):
    folder = write_dir(tmp_path, labels=[""])
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LoadError, match="label map is empty"):
        load_model(cfg(folder))


def test_unknown_architecture_lists_valid_ones(tmp_path):
    folder = write_dir(tmp_path, config={"architecture": "yolo_v99", "num_classes": 5})
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LoadError, match="unknown architecture 'yolo_v99'") as info:
        load_model(cfg(folder))
    assert "fasterrcnn_resnet50_fpn" in str(info.value)
    assert TEST_ARCH in str(info.value)
    assert TEST_ARCH in detection_architectures()


def test_garbage_weights_say_what_was_expected(tmp_path):
    folder = write_dir(tmp_path)
    (folder / "model.safetensors").write_bytes(os.urandom(64))
    with pytest.raises(LoadError, match="model.safetensors: cannot read weights"):
        load_model(cfg(folder))


def test_weights_flag_to_a_missing_file(tmp_path):
    folder = write_dir(tmp_path)
    with pytest.raises(LoadError, match="no such file"):
        load_model(cfg(folder, weights=str(tmp_path / "nope" / "w.pt")))


class Evil:
    """Unpickling this runs os.mkdir: the classic pickle attack."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (str(self.target),))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    proof = tmp_path / "proof-the-payload-is-live"
    torch.save({"model": Evil(proof)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)  # an unsafe load runs it...
    assert proof.is_dir()

    target = tmp_path / "pwned"
    folder = write_dir(tmp_path / "m", {"model.pt": {"model": Evil(target)}})
    with pytest.raises(LoadError, match=r"model.pt: cannot read weights \(UnpicklingError"):
        load_model(cfg(folder))
    assert not target.exists()  # ...the server's load did not


# ---- model_dir fallback ------------------------------------------------------------

def test_missing_or_empty_model_dir_is_an_error_naming_the_folder(tmp_path):
    # What a wrong storageUri leaves behind must not become a toy model behind a green
    # readiness probe.
    with pytest.raises(LoadError, match=r"--model_dir .*absent is missing: .*--demo_if_empty"):
        resolve_model_dir(cfg(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match=r"--model_dir .*empty is empty: .*storageUri"):
        resolve_model_dir(cfg(tmp_path / "empty"))


def test_the_demo_is_served_for_an_empty_folder_only_when_asked(tmp_path):
    asked = replace(cfg(tmp_path / "absent"), demo_if_empty=True)
    assert resolve_model_dir(asked) == DEMO_MODEL_DIR
    (tmp_path / "empty").mkdir()
    assert resolve_model_dir(replace(asked, model_dir=str(tmp_path / "empty"))) == DEMO_MODEL_DIR
    folder = write_dir(tmp_path / "real")
    assert resolve_model_dir(replace(asked, model_dir=str(folder))) == folder


def test_model_dir_with_files_is_used(tmp_path):
    folder = write_dir(tmp_path)
    assert resolve_model_dir(cfg(folder)) == folder


def test_model_dir_that_is_a_file_is_an_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(LoadError, match="is not a folder"):
        resolve_model_dir(cfg(path, architecture=TEST_ARCH))


def test_flags_alone_need_no_model_dir(tmp_path, state_dict):
    # --architecture A --num_classes N --weights FILE, with the default /mnt/models absent.
    weights = tmp_path / "w.safetensors"
    save_file(state_dict, str(weights))
    loaded = load_model(cfg(tmp_path / "absent", architecture=TEST_ARCH,
                            num_classes=NUM_CLASSES, weights=str(weights)))
    assert loaded.source == str(weights)
    assert loaded.labels == ["__background__"] + [f"class_{i}" for i in range(1, NUM_CLASSES)]
    assert_same_weights(loaded.module, state_dict)


@pytest.mark.parametrize(("fmt", "half"), [("safetensors", False), ("safetensors", True),
                                           ("pt", False)])
def test_the_writer_and_the_loader_agree(tmp_path: Path, fmt: str, half: bool) -> None:
    import torch
    import torchvision

    from predictor.pipeline.loader import save_model_folder

    torch.manual_seed(1)
    labels = ["__background__", "cat", "dog"]
    model = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None,
                                         weights_backbone=None, num_classes=3)
    weights = save_model_folder(tmp_path / "m", model.state_dict(), "ssdlite320_mobilenet_v3_large",
                                labels, fmt=fmt, half=half, version="2026-11-30",
                                model_kwargs={"topk_candidates": 50})
    assert weights.name == f"model.{fmt}"
    assert oct(weights.stat().st_mode & 0o777) == "0o644"  # readable by the image's user
    loaded = load_model(ModelConfig(model_dir=str(tmp_path / "m")))
    assert loaded.labels == labels
    assert loaded.version == "2026-11-30"
    assert loaded.module.topk_candidates == 50
    for name, value in model.state_dict().items():
        got = loaded.module.state_dict()[name]
        tolerance = 1e-3 * (1 + value.float().abs().max().item()) if half else 0
        assert torch.allclose(got.float(), value.float(), atol=tolerance), name
