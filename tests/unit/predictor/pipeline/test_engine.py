"""engine: the same detections as torchvision itself, in the image's own pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file

from predictor.config import ModelConfig
from predictor.pipeline.engine import Engine, OutOfMemory, pick_device
from tests.support.servers import TEST_ARCH, TEST_LABELS


class ScriptedDetector(torch.nn.Module):
    """A TorchScript-able stand-in that answers like a scripted torchvision detector."""

    def forward(self, images: list[torch.Tensor]
                ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        out: list[dict[str, torch.Tensor]] = []
        for img in images:
            height = float(img.shape[1])
            width = float(img.shape[2])
            out.append({
                "boxes": torch.tensor([[0.0, 0.0, width, height]]),
                "scores": img.mean().reshape(1),
                "labels": torch.tensor([2]),
            })
        return {}, out


@pytest.fixture(scope="module")
def model_dir(random_model_dir: Path) -> Path:
    """The session's random-weights ssdlite320 (tests/conftest.py)."""
    return random_model_dir


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Engine:
    eng = Engine(ModelConfig(model_dir=str(model_dir), device="cpu"))
    eng.load()
    return eng


@pytest.fixture(scope="module")
def reference(model_dir: Path) -> torch.nn.Module:
    """The same weights in a torchvision model built by hand, with the same cut-offs."""
    model = torchvision.models.get_model(TEST_ARCH, weights=None, weights_backbone=None,
                                         num_classes=len(TEST_LABELS), score_thresh=0.05,
                                         detections_per_img=100)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")))
    return model.eval()


def picture(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img[height // 4: height // 2, width // 3: width // 2] = (250, 30, 30)  # a red block
    return img


def test_load_is_idempotent_and_knows_the_labels(engine):
    first = engine.loaded
    assert engine.load() is first
    assert engine.loaded.labels == TEST_LABELS
    assert engine.device.type == "cpu"
    assert not engine.loaded.module.training


def test_same_detections_as_torchvision_on_non_square_images(engine, reference):
    images = [picture(200, 500, 1), picture(330, 150, 2)]
    got = engine.run(images)
    with torch.inference_mode():
        want = reference([torch.from_numpy(img).permute(2, 0, 1).float() / 255.0
                          for img in images])
    assert len(got) == 2
    for raw, ref, img in zip(got, want, images, strict=True):
        assert len(raw.scores) > 0  # random weights still give low-score boxes
        np.testing.assert_allclose(raw.boxes, ref["boxes"].numpy(), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(raw.scores, ref["scores"].numpy(), rtol=1e-4, atol=1e-5)
        assert np.array_equal(raw.labels, ref["labels"].numpy())
        height, width = img.shape[:2]
        assert raw.boxes.shape[1] == 4
        assert raw.boxes[:, [0, 2]].max() <= width + 1e-3
        assert raw.boxes[:, [1, 3]].max() <= height + 1e-3
    # Boxes are in the picture's own pixels, not the model's 320 x 320 input.
    assert got[0].boxes[:, 2].max() > 320
    assert got[1].boxes[:, 3].max() > 320


def test_batch_results_match_single_runs(engine):
    images = [picture(120, 160, 3), picture(90, 90, 4)]
    batched = engine.run(images)
    for img, raw in zip(images, batched, strict=True):
        alone = engine.run([img])[0]
        np.testing.assert_allclose(raw.boxes, alone.boxes, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(raw.scores, alone.scores, rtol=1e-4, atol=1e-5)


def test_read_only_arrays_are_not_handed_to_torch(engine, monkeypatch):
    # torch warns (once per process, so a warnings filter cannot see it reliably) when
    # given a read-only array, as V2 UINT8 images are: views of the request bytes.
    original = torch.from_numpy
    handed: list[bool] = []

    def spy(arr: np.ndarray) -> torch.Tensor:
        handed.append(bool(arr.flags.writeable))
        return original(arr)

    monkeypatch.setattr(torch, "from_numpy", spy)
    img = picture(64, 80, 5)
    frozen = np.frombuffer(img.tobytes(), dtype=np.uint8).reshape(img.shape)
    assert not frozen.flags.writeable
    out = engine.run([frozen])[0]
    assert handed == [True]
    np.testing.assert_allclose(out.scores, engine.run([img])[0].scores, rtol=1e-5)


def test_empty_batch(engine):
    assert engine.run([]) == []


def test_out_of_device_memory_becomes_out_of_memory(engine, monkeypatch):
    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine.loaded.module, "forward", boom)
    with pytest.raises(OutOfMemory, match="out of device memory on a batch of 2"):
        engine.run([picture(32, 32, 6), picture(32, 32, 7)])


def test_other_errors_pass_through_unchanged(engine, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("bad input")

    monkeypatch.setattr(engine.loaded.module, "forward", broken)
    with pytest.raises(ValueError, match="bad input"):
        engine.run([picture(32, 32, 8)])


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_scripted_detector_output_tuple_is_unwrapped(tmp_path):
    folder = tmp_path / "ts"
    folder.mkdir()
    torch.jit.script(ScriptedDetector()).save(str(folder / "model.pt"))
    (folder / "labels.txt").write_text("\n".join(TEST_LABELS) + "\n")
    eng = Engine(ModelConfig(model_dir=str(folder), device="cpu", allow_torchscript=True))
    eng.load()
    white = np.full((40, 70, 3), 255, dtype=np.uint8)
    (raw,) = eng.run([white])
    assert raw.boxes.tolist() == [[0.0, 0.0, 70.0, 40.0]]
    assert raw.scores.tolist() == pytest.approx([1.0])
    assert raw.labels.tolist() == [2]


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            pick_device("cuda")
