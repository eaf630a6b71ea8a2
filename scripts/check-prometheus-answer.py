"""Checks a Prometheus instant-query answer the way KEDA reads it (scripts/kind-e2e.sh).

Usage: python scripts/check-prometheus-answer.py ANSWER.json

Exits non-zero, saying why, unless the answer is a successful vector of exactly one
series with a number: KEDA's Prometheus scaler refuses several series and reads an
empty answer as 0 (kedacore/keda v2.18.0, pkg/scalers/prometheus_scaler.go,
ExecutePromQuery), so an empty answer means the autoscaler is blind. Needs only the
standard library.
"""

from __future__ import annotations

import json
import math
import sys


def check(text: str) -> str:
    """A one-line summary of a usable answer; raises ValueError otherwise."""
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not JSON ({exc}): {text[:200]!r}") from exc
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise ValueError(f"the query failed: {text[:200]!r}")
    result = answer.get("data", {}).get("result")
    if not isinstance(result, list) or not result:
        raise ValueError("no series: KEDA would read 0 and never scale out")
    if len(result) > 1:
        raise ValueError(f"{len(result)} series: KEDA needs one (sum them in the query)")
    value = float(result[0]["value"][1])
    if not math.isfinite(value):
        raise ValueError(f"the value is {value}")
    return f"keda: the query answers {value:g}"


def main(argv: list[str]) -> int:
    """Command-line entry point."""
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as file:
        text = file.read()
    try:
        print(check(text))
    except ValueError as exc:
        print(f"Prometheus: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
