"""config: every flag written once, as a field; the parser and the configuration agree."""

from __future__ import annotations

import dataclasses

import pytest

from predictor.__main__ import build_parser
from predictor.config import BatchingConfig, Limits, ModelConfig, ServerConfig, from_args


def test_no_flag_gives_the_dataclass_defaults() -> None:
    assert from_args(build_parser().parse_args([])) == ServerConfig()


@pytest.mark.parametrize("cls", [ModelConfig, Limits, BatchingConfig])
def test_every_field_is_a_flag_of_the_server(cls: type) -> None:
    options = build_parser()._option_string_actions
    for f in dataclasses.fields(cls):
        name = f.metadata["flag"].name or f"--{f.name}"
        assert name in options, f"{cls.__name__}.{f.name} has no flag {name}"
        assert options[name].dest == f.name


def test_flags_reach_their_fields() -> None:
    args = build_parser().parse_args([
        "--labels", "names.txt", "--no_fuse_conv_bn", "--max_batch_size", "3",
        "--grace_period", "5", "--warmup_batch_sizes", "1,4", "--inference_workers", "auto",
        "--torch_threads", "2", "--max_body_bytes", "1000", "--model_name", "cars"])
    cfg = from_args(args)
    assert cfg.model_name == "cars"
    assert cfg.grace_period == 5
    assert cfg.model.labels_file == "names.txt"
    assert cfg.model.fuse_conv_bn is False
    assert cfg.model.warmup_batch_sizes == (1, 4)
    assert cfg.model.torch_threads == 2
    assert cfg.batching.max_batch_size == 3
    assert cfg.batching.inference_workers is None  # auto, resolved at the edge
    assert cfg.limits.max_body_bytes == 1000
    assert from_args(args, workers=3, threads=1).batching.inference_workers == 3


@pytest.mark.parametrize(("argv", "message"), [
    (["--max_batch_size", "0"], "must be a positive integer"),
    (["--score_threshold", "1.5"], "must be between 0 and 1"),
    (["--torch_threads", "many"], "expected 'auto' or a positive integer"),
    (["--device", "tpu"], "invalid choice"),
])
def test_bad_values_are_refused_with_the_reason(argv: list[str], message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)
    assert message in capsys.readouterr().err


def test_min_threshold_above_the_default_is_refused() -> None:
    args = build_parser().parse_args(["--min_score_threshold", "0.6"])
    with pytest.raises(SystemExit, match="must not exceed --score_threshold"):
        from_args(args)


def test_the_docs_list_every_flag_with_its_default() -> None:
    from tests.support.servers import REPO

    tables = "".join((REPO / "docs" / name).read_text(encoding="utf-8")
                     for name in ("flags.md", "limits.md"))
    for cls in (ServerConfig, ModelConfig, Limits, BatchingConfig):
        for f in dataclasses.fields(cls):
            if "flag" not in f.metadata:
                continue
            name = f.metadata["flag"].name or f"--{f.name}"
            rows = [line for line in tables.splitlines()
                    if line.startswith("|") and f"`{name}`" in line]
            assert rows, f"docs/flags.md and docs/limits.md lack {name}"
            if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
                text = str(f.default) if isinstance(f.default, int) else f"{f.default:g}"
                assert any(text in row.replace(",", "") for row in rows), (
                    f"the docs' row for {name} does not say its default {f.default}")


def test_max_models_without_a_repository_is_refused(capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    from predictor.__main__ import main

    assert main(["--max_models", "2", "--inference_workers", "1", "--torch_threads", "1"]) == 2
    assert "--max_models limits a model repository" in capsys.readouterr().err


def test_the_repository_flags_reach_the_configuration() -> None:
    cfg = from_args(build_parser().parse_args(["--model_repository", "/mnt/models",
                                               "--max_models", "3"]))
    assert (cfg.model_repository, cfg.max_models) == ("/mnt/models", 3)
    assert from_args(build_parser().parse_args([])).model_repository is None
