"""Checks the web app's answer to POST /api/detect (used by scripts/kind-e2e.sh).

Usage: python scripts/check-web-answer.py ANSWER.json PICTURES

Exits non-zero, saying why, unless the answer is a JSON object whose "results" hold
one entry per picture sent. Needs only the standard library.
"""

from __future__ import annotations

import json
import sys


def check(text: str, pictures: int) -> str:
    """A one-line summary of a good answer; raises ValueError for a bad one."""
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not JSON ({exc}): {text[:200]!r}") from exc
    results = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(results, list):
        raise ValueError(f"the answer has no \"results\" list: {text[:200]!r}")
    if len(results) != pictures:
        raise ValueError(f"{len(results)} results for {pictures} picture(s): {text[:200]!r}")
    return f"web app: {len(results)} result(s) for {pictures} picture(s)"


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as file:
        text = file.read()
    try:
        print(check(text, int(argv[2])))
    except ValueError as exc:
        print(f"POST /api/detect: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
