"""The shipped alerts (manifests/monitoring/prometheusrule.yaml) under ``promtool``.

The rule groups are taken from the PrometheusRule as kustomize renders it, written as
a plain rule file, checked with ``promtool check rules`` and run through the cases in
alerts_test.yaml with ``promtool test rules``: each alert fires on a series that should
fire it and stays silent on one that should not.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ._prometheus import need, rule_groups

pytestmark = pytest.mark.monitoring

CASES = Path(__file__).with_name("alerts_test.yaml")
# What the on-call engineer is promised (issue 19): each of these has an alert.
ALERTS = {"DetectorNoReplicaReady", "DetectorReplicasNotReady", "DetectorMetricsMissing",
          "DetectorQueueNearLimit", "DetectorRequestsRefused", "DetectorErrors",
          "DetectorLatencyHigh", "DetectorGpuMemoryHigh"}


def _rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}


def _cases() -> dict[str, Any]:
    import yaml

    cases: dict[str, Any] = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    return cases


def _write_rules_and_cases(folder: Path) -> Path:
    """rules.yaml from the rendered PrometheusRule and the cases, static annotations filled in."""
    import yaml

    rules = _rules()
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    cases = _cases()
    for case in cases["tests"]:
        for check in case.get("alert_rule_test", []):
            static = {k: v for k, v in rules[check["alertname"]]["annotations"].items()
                      if "{{" not in v}
            for alert in check.get("exp_alerts") or []:
                alert["exp_annotations"] = {**static, **alert.get("exp_annotations", {})}
    path = folder / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(cases, sort_keys=False))
    return path


def test_every_promised_alert_is_shipped_with_a_severity_and_a_runbook() -> None:
    rules = _rules()
    assert set(rules) == ALERTS
    operating = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text(
        encoding="utf-8")
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor == name.lower()
        assert f"### {name}" in operating, f"docs/operating.md says nothing about {name}"


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    promtool = need("promtool")
    _write_rules_and_cases(tmp_path)
    proc = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in proc.stdout


def test_each_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    promtool = need("promtool")
    cases = _write_rules_and_cases(tmp_path)
    proc = subprocess.run([promtool, "test", "rules", cases.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_each_alert_has_a_firing_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _cases()["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == ALERTS, f"no firing case for {sorted(ALERTS - firing)}"
    assert silent == ALERTS, f"no silent case for {sorted(ALERTS - silent)}"
