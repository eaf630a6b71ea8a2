"""The layout draws the request's path: imports point one way, and none crosses a line.

docs/architecture.md promises these; each rule here is one of its sentences, checked on
every import statement of every module (function-level imports included).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _module(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _typing_only(tree: ast.AST) -> set[ast.AST]:
    """The statements under ``if TYPE_CHECKING:``, which never run."""
    return {inner for node in ast.walk(tree) if isinstance(node, ast.If)
            and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            for stmt in node.body for inner in ast.walk(stmt)}


def _imports(path: Path, *, typing: bool = True) -> set[str]:
    """Every module a file imports, relative imports resolved to absolute names.

    With ``typing=False``, imports under ``if TYPE_CHECKING:`` (annotations only) are left out.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = _module(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    skip = set() if typing else _typing_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if node in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _files(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (REPO / f).rglob("*.py")
                  if "protos" not in p.parts)


def _offenders(files: list[Path], forbidden: tuple[str, ...], *, typing: bool = True
               ) -> list[str]:
    bad = []
    for path in files:
        for name in sorted(_imports(path, typing=typing)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(REPO)} imports {name}")
    return bad


def test_the_runtime_imports_no_client_and_no_tool() -> None:
    assert not _offenders(_files("predictor"), ("client", "bench", "demo", "launch"))


def test_the_client_imports_no_server_and_no_tool() -> None:
    assert not _offenders(_files("client"), (
        "predictor", "bench", "demo", "launch", "torch", "torchvision", "kserve"))


def test_the_web_backend_uses_only_the_clients_public_names() -> None:
    # The product's backend uses the client as any product would: `from client import X`.
    import client

    public = {f"client.{name}" for name in client.__all__}
    bad = [f"{path.relative_to(REPO)} imports {name}" for path in _files("client/web")
           for name in sorted(_imports(path))
           if name.startswith("client.") and not name.startswith("client.web")
           and name not in public]
    assert not bad, bad


def test_the_tools_and_tests_share_process_helpers_through_launch() -> None:
    # launch/ (start, wait until ready, stop) is neutral: it knows no package of the
    # project, and the tests' helpers do not reach into the benchmark tool for it.
    assert not _offenders(_files("launch"), ("predictor", "client", "bench", "demo", "tests"))
    assert not _offenders(_files("tests/support"), ("bench",))


def test_the_model_side_knows_no_protocol_no_server_and_no_kserve() -> None:
    assert not _offenders(_files("predictor/pipeline"), (
        "predictor.protocol", "predictor.server", "predictor.model", "predictor.errors",
        "predictor.metrics", "kserve", "fastapi", "grpc"))


def test_the_wire_knows_no_server_and_no_model_glue() -> None:
    assert not _offenders(_files("predictor/protocol"), (
        "predictor.server", "predictor.model", "predictor.errors", "predictor.metrics"))


def test_kserve_is_imported_only_where_the_docs_say() -> None:
    allowed = {"predictor/__main__.py", "predictor/model.py", "predictor/errors.py",
               "predictor/protocol/grpc_v2.py"}
    users = {p.relative_to(REPO).as_posix() for p in _files("predictor")
             if any(n == "kserve" or n.startswith("kserve.") for n in _imports(p))}
    outside = sorted(u for u in users - allowed if not u.startswith("predictor/server/"))
    assert not outside, f"kserve imported outside server/, model.py, errors.py: {outside}"
    # protocol/ reads only KServe's generated gRPC messages, nothing of its server.
    wire = _imports(REPO / "predictor/protocol/grpc_v2.py")
    assert {n for n in wire if n.startswith("kserve")} <= {
        "kserve.protocol.grpc", "kserve.protocol.grpc.grpc_predict_v2_pb2"}


def test_the_two_transports_do_not_import_each_other() -> None:
    # What both need (request id, model lookup, the refusal log line) lives in served.py;
    # the REST middleware (rest_middleware.py) is REST's own.
    rest, grpc = "predictor.server.rest_routes", "predictor.server.grpc_servicer"
    guard = "predictor.server.rest_middleware"
    assert not _offenders([REPO / "predictor/server/grpc_servicer.py"], (rest, guard))
    assert not _offenders([REPO / "predictor/server/rest_routes.py"], (grpc,))
    assert not _offenders([REPO / "predictor/server/served.py"], (rest, grpc, guard))


def test_the_decode_side_of_the_pipeline_imports_no_torch() -> None:
    # Decoding, batching and selecting detections are plain numpy, and so is the runtime of
    # a compiled model folder: only the torch engines (engine.py and the CPU engine's
    # modules) need torch.
    files = [REPO / "predictor/pipeline" / name
             for name in ("decode.py", "images.py", "batcher.py", "detections.py",
                          "compiled.py", "precision.py")]
    assert not _offenders(files, ("torch", "torchvision", "predictor.pipeline.engine",
                                  "predictor.pipeline.cpu_engine", "predictor.pipeline.loader"),
                           typing=False)


def test_the_error_classes_know_no_pipeline() -> None:
    # errors.py maps errors to statuses; wording the batcher's and engine's failures is
    # the model glue's job (model.batch_failure).
    assert not _offenders([REPO / "predictor/errors.py"], ("predictor.pipeline",))


@pytest.mark.parametrize("folder", ["predictor", "client", "bench", "demo", "launch"])
def test_no_module_is_past_the_size_a_reader_takes_in(folder: str) -> None:
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in _files(folder)
            if (n := p.read_text(encoding="utf-8").count("\n")) > 450]
    assert not long, long


def test_the_import_reader_resolves_relative_imports(tmp_path: Path) -> None:
    # The checks above are only as good as this reader: a relative import two levels up
    # and a function-level import must both be seen.
    path = REPO / "predictor" / "pipeline" / "engine.py"
    names = _imports(path)
    assert "predictor.config" in names
    assert "predictor.pipeline.loader" in names
    assert "predictor.protocol.RequestError" in _imports(REPO / "predictor/errors.py")
    # An import only for annotations is seen, and left out when asked.
    images = REPO / "predictor/pipeline/images.py"
    assert "torch" in _imports(images)
    assert "torch" not in _imports(images, typing=False)
