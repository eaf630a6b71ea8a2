"""Training writes a model directory the server can rebuild; the shipped demo model works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from client.evaluate import run as evaluate_run
from demo import synthetic, train
from predictor.config import ModelConfig
from predictor.pipeline.loader import load_model

DEMO_MODEL = Path(__file__).resolve().parents[3] / "predictor" / "demo" / "model"


def rebuild(model_dir: Path) -> torch.nn.Module:
    """Rebuild a model as the server does: the loader reads config.json, strict weights."""
    return load_model(ModelConfig(model_dir=str(model_dir), device="cpu")).module.eval()


def _tiny_run(out: Path, *extra: str) -> dict:
    args = train.parse_args(
        [
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--workers",
            "0",
            "--checkpoint-every",
            "1",
            "--no-progress",
            *extra,
        ]
    )
    return train.train(args)


def test_few_steps_write_a_loadable_model_dir(tmp_path: Path):
    summary = _tiny_run(tmp_path)
    assert summary["steps"] == 2
    assert np.isfinite(summary["loss"])
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config["architecture"] == "ssdlite320_mobilenet_v3_large"
    assert config["num_classes"] == 5
    assert config["weights"] == "model.safetensors"
    assert config["model_kwargs"]["score_thresh"] > 0.001  # not torchvision's slow default
    assert (tmp_path / "labels.txt").read_text(encoding="utf-8").split() == [
        "__background__",
        "circle",
        "square",
        "triangle",
        "star",
    ]
    weights = tmp_path / "model.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    assert weights.stat().st_mode & 0o044 == 0o044  # readable by a non-root server

    model = rebuild(tmp_path)
    with torch.no_grad():
        out = model([torch.rand(3, 240, 300)])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    assert len(out["boxes"]) <= config["model_kwargs"]["detections_per_img"]


def test_anchor_min_ratio_is_written_for_the_server(tmp_path: Path):
    _tiny_run(tmp_path, "--anchor-min-ratio", "0.1", "--small-objects", "0.5")
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert config["anchors"] == {"min_ratio": 0.1, "max_ratio": 0.95}
    assert rebuild(tmp_path).anchor_generator.scales[0] == pytest.approx(0.1)
    with pytest.raises(SystemExit, match="trained with anchors"):
        _tiny_run(tmp_path, "--steps", "3", "--resume", "--anchor-min-ratio", "0")


@pytest.mark.parametrize("flags", [["--small-objects", "1.5"], ["--anchor-min-ratio", "0.95"],
                                   ["--anchor-min-ratio", "-0.1"]])
def test_bad_training_flags_are_refused(flags: list[str], capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        train.parse_args(["--out", "x", *flags])
    assert "must be" in capsys.readouterr().err


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_continues(tmp_path: Path):
    _tiny_run(tmp_path / "a")
    _tiny_run(tmp_path / "b")
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    summary = train.train(
        train.parse_args(
            [
                "--out",
                str(tmp_path / "a"),
                "--steps",
                "3",
                "--batch-size",
                "2",
                "--workers",
                "0",
                "--no-progress",
                "--resume",
            ]
        )
    )
    assert summary["steps"] == 3
    c = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_batches_depend_only_on_seed_and_step():
    x_images, x_targets = train.make_batch(seed=3, step=7, batch_size=2, mixed_fraction=0.5)
    y_images, y_targets = train.make_batch(seed=3, step=7, batch_size=2, mixed_fraction=0.5)
    z_images, _ = train.make_batch(seed=3, step=8, batch_size=2, mixed_fraction=0.5)
    assert all(torch.equal(x, y) for x, y in zip(x_images, y_images, strict=True))
    assert all(
        torch.equal(x["boxes"], y["boxes"]) for x, y in zip(x_targets, y_targets, strict=True)
    )
    assert not torch.equal(x_images[0], z_images[0]) or x_images[0].shape != z_images[0].shape
    assert float(x_images[0].max()) <= 1.0


@pytest.mark.skipif(
    not (DEMO_MODEL / "model.safetensors").exists(),
    reason="no trained demo model yet: python -m demo.train, then copy",
)
def test_demo_model_finds_shapes_on_held_out_pictures(tmp_path: Path):
    """At least mAP@0.5 0.9 on 50 unseen pictures, some of them not square."""
    annotations = synthetic.write_dataset(
        tmp_path, count=50, seed=987_654, mixed_fraction=0.5, progress=False
    )
    model = rebuild(DEMO_MODEL)

    def detect(paths):
        from PIL import Image

        images = []
        for p in paths:
            with Image.open(p) as pic:
                array = np.array(pic.convert("RGB"), dtype=np.uint8)
            images.append(torch.from_numpy(array).permute(2, 0, 1).float() / 255)
        with torch.no_grad():
            outputs = model(images)
        return [
            [
                (b.tolist(), float(s), int(lab))
                for b, s, lab in zip(o["boxes"], o["scores"], o["labels"], strict=True)
                if s >= 0.05
            ]
            for o in outputs
        ]

    report = evaluate_run(detect, tmp_path / "images", annotations, progress=False)
    assert report.map50 >= 0.9, report.format()
