"""Settings and the events file: defaults, and one clear message per invalid setting."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import free_port
from gatekeep.config import ConfigError, load_events_file, load_settings

SECRET = "s" * 40
ADMIN = "admin-key-0123456789"


def test_defaults_without_environment() -> None:
    settings = load_settings({})

    assert settings.port == 8000
    assert settings.embedded is True
    assert settings.metrics_port == 9100
    assert settings.log_level == "INFO"


def test_environment_overrides_defaults() -> None:
    settings = load_settings(
        {
            "GATEKEEP_PORT": "9000",
            "GATEKEEP_REDIS_URL": "redis://127.0.0.1:6390/0",
            "GATEKEEP_TOKEN_SECRET": SECRET,
            "GATEKEEP_ADMIN_API_KEYS": f"{ADMIN}, {ADMIN}-second",
            "GATEKEEP_LOG_LEVEL": "debug",
            "GATEKEEP_METRICS_PORT": "off",
        }
    )

    assert settings.port == 9000
    assert settings.embedded is False
    assert settings.admin_api_keys == (ADMIN, f"{ADMIN}-second")
    assert settings.log_level == "DEBUG"
    assert settings.metrics_port is None


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"GATEKEEP_PORT": "eighty"}, ["GATEKEEP_PORT", "'eighty'"]),
        ({"GATEKEEP_PORT": "70000"}, ["GATEKEEP_PORT", "70000", "1 to 65535"]),
        ({"GATEKEEP_LOG_LEVEL": "LOUD"}, ["GATEKEEP_LOG_LEVEL", "'LOUD'", "INFO"]),
        ({"GATEKEEP_REDIS_URL": "http://x"}, ["GATEKEEP_REDIS_URL", "redis://"]),
        ({"GATEKEEP_TOKEN_SECRET": "short"}, ["GATEKEEP_TOKEN_SECRET", "32"]),
        ({"GATEKEEP_WORKERS": "2"}, ["GATEKEEP_WORKERS=2", "GATEKEEP_REDIS_URL"]),
        ({"GATEKEEP_METRICS_PORT": "8000"}, ["GATEKEEP_METRICS_PORT=8000", "another port"]),
        ({"GATEKEEP_ADMIN_API_KEYS": "short"}, ["GATEKEEP_ADMIN_API_KEYS", "16"]),
        (
            {"GATEKEEP_REDIS_URL": "redis://127.0.0.1:1/0", "GATEKEEP_ADMIN_API_KEYS": ADMIN},
            ["GATEKEEP_TOKEN_SECRET is missing"],
        ),
        (
            {"GATEKEEP_REDIS_URL": "redis://127.0.0.1:1/0", "GATEKEEP_TOKEN_SECRET": SECRET},
            ["GATEKEEP_ADMIN_API_KEYS is missing"],
        ),
    ],
)
def test_invalid_setting_named_in_error(environ: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ)

    for name in names:
        assert name in str(raised.value)


def test_events_file_parsed(tmp_path: Path) -> None:
    path = tmp_path / "events.toml"
    path.write_text(
        '[[events]]\nevent_id = "a"\nrelease_rate = 0.5\n\n[[events]]\nevent_id = "b"\n'
    )

    events = load_events_file(str(path))

    assert [event.event_id for event in events] == ["a", "b"]
    assert events[0].release_rate == 0.5


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[[events]]\nevent_id = "a"\nrelease_rate = -1\n', "events[0].release_rate"),
        ('[[events]]\nevent_id = "a"\nspeed = 3\n', "events[0].speed"),
        ('[[events]]\nevent_id = "a"\n[[events]]\nevent_id = "a"\n', "more than once"),
        ("[[events]\n", "not valid TOML"),
        ("[server]\nport = 1\n", "unknown top-level key 'server'"),
    ],
)
def test_events_file_errors_named(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "events.toml"
    path.write_text(text)

    with pytest.raises(ConfigError) as raised:
        load_events_file(str(path))

    assert fragment in str(raised.value)


def test_serve_exits_with_one_message(tmp_path: Path) -> None:
    environ = {"PATH": "/usr/bin:/bin", "GATEKEEP_PORT": "eighty"}

    result = subprocess.run(
        [sys.executable, "-m", "gatekeep.cli", "serve"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "GATEKEEP_PORT='eighty'" in result.stderr


def test_serve_embedded_rejects_two_workers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gatekeep.cli", "serve", "--workers", "2"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "GATEKEEP_REDIS_URL" in result.stderr


def test_serve_busy_metrics_port_named() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = subprocess.run(
            [sys.executable, "-m", "gatekeep.cli", "serve", "--port", str(free_port())],
            env={"PATH": "/usr/bin:/bin", "GATEKEEP_METRICS_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert result.returncode == 2
    assert f"GATEKEEP_METRICS_PORT={port}" in result.stderr
    assert "Traceback" not in result.stderr
