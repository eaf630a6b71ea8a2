"""The web backend's edge: flags and environment -> one WebSettings, checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from client import ConfigError
from client._config import ClientConfig
from client.web import WebSettings
from client.web.__main__ import build_parser, main, settings_from_args

REPO = Path(__file__).resolve().parents[3]


def settings(*argv: str) -> WebSettings:
    return settings_from_args(build_parser().parse_args(list(argv)))


def test_flags_become_one_settings_object() -> None:
    s = settings("--url", "10.0.0.5:8080", "--model", "cars", "--protocol", "grpc",
                 "--grpc-url", "10.0.0.5:9000", "--timeout", "7", "--retries", "1",
                 "--max-files", "4", "--max-upload-mb", "0.5", "--max-backoff", "2",
                 "--health-interval", "3")
    assert s.client.url == "http://10.0.0.5:8080"
    assert (s.client.model, s.client.protocol) == ("cars", "grpc")
    assert s.client.grpc_target() == ("10.0.0.5:9000", False)
    assert (s.client.timeout, s.client.retries, s.client.max_backoff) == (7.0, 1, 2.0)
    assert (s.max_files, s.max_upload_bytes, s.max_upload_mb) == (4, 512 * 1024, 0.5)
    assert (s.health_interval, s.probe_timeout) == (3.0, 3.0)


def test_environment_gives_the_same_defaults_as_the_cli(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv("DETECT_CLIENT_URL", "http://inference:8080")
    monkeypatch.setenv("DETECT_CLIENT_MODEL", "cars")
    monkeypatch.setenv("DETECT_CLIENT_PROTOCOL", "v1")
    monkeypatch.setenv("DETECT_CLIENT_TOKEN", "secret")
    monkeypatch.setenv("DETECT_WEB_PORT", "9000")
    args = build_parser().parse_args([])
    s = settings_from_args(args)
    assert (s.client.url, s.client.model, s.client.protocol) == ("http://inference:8080",
                                                                 "cars", "v1")
    assert s.client.auth_headers()["Authorization"] == "Bearer secret"
    assert (args.host, args.port) == ("127.0.0.1", 9000)
    assert settings("--model", "other").client.model == "other"  # a flag beats the environment


@pytest.mark.parametrize(("field", "value", "words"), [
    ("max_files", 0, "--max-files"),
    ("max_upload_bytes", 10, "--max-upload-mb"),
    ("health_interval", 0, "positive"),
    ("concurrency", 0, "concurrency"),
])
def test_settings_refuse_nonsense_saying_how_to_fix_it(field: str, value: float,
                                                      words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        WebSettings(client=ClientConfig(), **{field: value})  # type: ignore[arg-type]


def test_a_bad_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--url", "ftp://x"])
    assert info.value.code == 2
    assert "is not an HTTP URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--max-files", "0"])
    assert "'0' must be a whole number, 1 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--max-upload-mb", "0"])
    assert "argument --max-upload-mb: '0' must be a number above 0" in capsys.readouterr().err


def test_help_lists_the_clients_connection_flags() -> None:
    done = subprocess.run([sys.executable, "-m", "client.web", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    for flag in ("--url", "--model", "--protocol", "--grpc-url", "--host-header", "--token",
                 "--ca-file", "--host", "--port", "--max-files", "--max-upload-mb",
                 "DETECT_CLIENT_URL"):
        assert flag in done.stdout


def test_the_guide_names_every_flag_with_its_default() -> None:
    from client.web.__main__ import build_parser

    guide = (REPO / "docs" / "web.md").read_text(encoding="utf-8")
    rows = [line for line in guide.splitlines() if line.startswith("| `--")]
    for action in build_parser()._actions:
        flags = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        if not flags:
            continue
        (row,) = [r for r in rows if f"`{flags[0]}`" in r.split("|")[1]] or [None]
        assert row is not None, f"docs/web.md's flag table lacks {flags[0]}"
        default = action.default
        if isinstance(default, (int, float)) and not isinstance(default, bool) \
                and flags[0] not in ("--port", "--timeout", "--retries"):
            assert f"{default:g}" in row.split("|")[2], f"{flags[0]}: default {default}"
