"""The arrows between packages, read from the source: the client never imports the
server, and the web backend uses the client as any product would, by its public names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import client

CLIENT = Path(client.__file__).resolve().parent
GENERATED = CLIENT / "protos"


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, absolute module, names) for every import in a file of the client package."""
    package = ".".join(path.relative_to(CLIENT.parent).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[:len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module, [alias.name for alias in node.names]


def sources(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*.py")) if GENERATED not in p.parents]


def test_no_client_module_imports_the_server() -> None:
    found = [f"{path.relative_to(CLIENT.parent)}:{line} imports {module}"
             for path in sources(CLIENT) for line, module, _ in imports(path)
             if module.split(".")[0] in ("predictor", "kserve", "torch", "torchvision")]
    assert not found, "\n".join(found)


def test_the_web_backend_uses_only_the_clients_public_names() -> None:
    public = set(client.__all__)
    found = []
    for path in sources(CLIENT / "web"):
        for line, module, names in imports(path):
            where = f"{path.relative_to(CLIENT.parent)}:{line}"
            if module == "client":
                found += [f"{where}: client.{n} is not public" for n in names
                          if n not in public]
            elif module.startswith("client.") and not module.startswith("client.web"):
                found.append(f"{where} imports {module}")
    assert not found, "\n".join(found)
