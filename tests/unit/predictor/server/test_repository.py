"""repository: names, folders, the index, --max_models, and an unload that frees the model."""

from __future__ import annotations

import asyncio
import gc
import shutil
import weakref
from dataclasses import replace
from pathlib import Path

import pytest

from predictor.config import ModelConfig, ServerConfig
from predictor.errors import BadRequest, NotFound
from predictor.server.repository import (
    DetectorRepository,
    RepositoryFull,
    check_name,
    is_model_folder,
)
from tests.support.servers import save_random_model


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_model(tmp_path_factory.mktemp("random") / "model")


def config() -> ServerConfig:
    return replace(ServerConfig(), model=ModelConfig(cpu_accel=False, device="cpu"))


@pytest.mark.parametrize("name", ["..", ".hidden", "a/b", "", "-x", "a b"])
def test_a_name_that_is_no_plain_folder_name_is_refused(name: str) -> None:
    with pytest.raises(BadRequest, match="invalid model name"):
        check_name(name)


def test_model_folders_are_told_from_other_folders(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "config.json").write_text("{}")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("")
    assert [p.name for p in sorted(tmp_path.iterdir()) if is_model_folder(p)] == ["m"]
    repository = DetectorRepository(tmp_path, config())
    assert repository.folders() == ["m"]
    assert repository.index() == [
        {"name": "m", "version": "", "state": "UNAVAILABLE", "reason": "not loaded"}]
    assert repository.index(ready_only=True) == []


def test_load_unload_frees_the_model_and_respects_max_models(tmp_path: Path,
                                                             model_folder: Path) -> None:
    shutil.copytree(model_folder, tmp_path / "a")
    shutil.copytree(model_folder, tmp_path / "b")
    repository = DetectorRepository(tmp_path, config(), max_models=1)

    async def main() -> weakref.ref[object]:
        model = await repository.load_named("a")
        assert await repository.load_named("a") is model  # twice: the same model
        with pytest.raises(RepositoryFull, match=r"the limit is 1 \(--max_models\)"):
            await repository.load_named("b")
        with pytest.raises(NotFound):
            await repository.load_named("c")
        assert repository.index()[0]["state"] == "READY"
        ref: weakref.ref[object] = weakref.ref(model)
        del model
        shutil.rmtree(tmp_path / "a")  # the agent deletes the folder before it unloads
        await repository.unload_named("a")
        with pytest.raises(NotFound, match="not loaded"):
            await repository.unload_named("a")
        await repository.load_named("b")  # room again
        await repository.unload_named("b")
        return ref

    ref = asyncio.run(main())
    gc.collect()
    assert ref() is None, "the unloaded model is still referenced"
    assert repository.models == {}


def test_a_caller_leaving_does_not_stop_a_load_or_an_unload(tmp_path: Path,
                                                            model_folder: Path) -> None:
    """The guard cancels a request whose client left: the load still lands, the unload
    still frees the model."""
    shutil.copytree(model_folder, tmp_path / "a")
    repository = DetectorRepository(tmp_path, config())

    async def main() -> None:
        call = asyncio.ensure_future(repository.load_named("a"))
        await asyncio.sleep(0.05)  # the load is running in its thread
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(600):
            if "a" in repository.models:
                break
            await asyncio.sleep(0.05)
        assert repository.index()[0]["state"] == "READY"
        call = asyncio.ensure_future(repository.unload_named("a"))
        await asyncio.sleep(0)
        call.cancel()
        for _ in range(600):
            if not repository._tasks:
                break
            await asyncio.sleep(0.05)
        assert repository.models == {}
        assert repository.index()[0]["reason"] == "not loaded"

    asyncio.run(main())


@pytest.mark.parametrize(("body", "ready_only"), [
    (b"", False), (b"{}", False), (b'{"ready": true}', True), (b'{"repository_name": ""}', False)])
def test_the_index_request_body_is_tritons(body: bytes, ready_only: bool) -> None:
    from predictor.server.repository_routes import _ready_only

    assert _ready_only(body) is ready_only


@pytest.mark.parametrize("body", [b"nonsense", b"[1]"])
def test_an_index_request_that_is_no_object_is_refused(body: bytes) -> None:
    from predictor.server.repository_routes import _ready_only

    with pytest.raises(BadRequest, match="index request"):
        _ready_only(body)
