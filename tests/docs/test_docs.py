"""The docs hold together: every relative link lands, every `make` target they name exists.

A reader follows the README's links into docs/ and copies `make ...` commands from both;
a renamed file, a moved heading or a dropped Makefile target must fail here, not on them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_MAKE = re.compile(r"(?:^|[\s;&|(])make((?:\s+[A-Za-z][\w-]*(?=[\s;&|)]|$))+)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def _links(path: Path) -> list[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    text = _INLINE_CODE.sub("", text)
    return [m.group(1) for m in _LINK.finditer(text)]


def _make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", makefile, re.M))


def _make_commands(path: Path) -> list[str]:
    """Targets of every `make ...` in a code block or an inline code span."""
    text = path.read_text(encoding="utf-8")
    code = [m.group(0) for m in _FENCE.finditer(text)]
    code += _INLINE_CODE.findall(_FENCE.sub("", text))
    targets = []
    for snippet in code:
        for line in snippet.splitlines():
            line = line.split("#", 1)[0]
            for m in _MAKE.finditer(line):
                targets += m.group(1).split()
    return targets


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_lands(doc: Path) -> None:
    broken = []
    for link in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(REPO)}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_make_target_named_exists(doc: Path) -> None:
    known = _make_targets()
    missing = sorted({t for t in _make_commands(doc) if t not in known})
    assert not missing, f"{doc.name} names make targets the Makefile lacks: {missing}"


def test_every_guide_is_linked_from_the_readme() -> None:
    readme = set(_links(REPO / "README.md"))
    orphans = [p.name for p in DOCS[1:] if f"docs/{p.name}" not in readme]
    assert not orphans, f"guides no README link leads to: {orphans}"


def test_the_readme_stays_a_front_door() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move long guides to docs/"


def test_the_checks_catch_what_they_claim(tmp_path: Path) -> None:
    # The link and make-target parsers see links and commands where a reader sees them.
    doc = tmp_path / "x.md"
    doc.write_text("# A Title: (here)\n[a](other.md#b) `[no](link.md)` ![pic](p.png)\n"
                   "```bash\nmake run ARGS=1 && make test-k8s  # not make nothing\n```\n"
                   "Run `make lint` to make sure.\n")
    assert _links(doc) == ["other.md#b", "p.png"]
    assert _make_commands(doc) == ["run", "test-k8s", "lint"]
    assert _anchors(doc) == {"a-title-here"}
    assert {"run", "test", "lint", "bench", "proto"} <= _make_targets()
