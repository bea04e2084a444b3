"""tidegate's one settings model: the environment over ``tidegate.toml``, one error type, no
secret in a repr or a message. (The file's own validation is tested in test_run_queue.py.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import TIDEGATE
from tidegate.config import Settings, safe_url
from tidegate.errors import ConfigError

SECRET = "s3cr3tpw"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TIDEGATE_* variable set, and an empty working directory."""
    for name in [n for n in os.environ if n.startswith("TIDEGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("TIDEGATE_HEARTBEAT_SECONDS", "abc", "must be a number"),
        ("TIDEGATE_VISIBILITY_TIMEOUT", "six hours", "must be an integer"),
        ("TIDEGATE_VISIBILITY_TIMEOUT", "1.5", "must be an integer"),
        ("TIDEGATE_MAX_CONCURRENT_RUNS", "lots", "must be an integer >= 0"),
    ],
)
def test_a_malformed_variable_is_a_config_error_naming_it_and_its_value(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert str(caught.value) == f"{name}={value!r}: {problem}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIDEGATE_HEARTBEAT_SECONDS", "0"),
        ("TIDEGATE_HEARTBEAT_SECONDS", "-2.5"),
        ("TIDEGATE_VISIBILITY_TIMEOUT", "0"),
        ("TIDEGATE_VISIBILITY_TIMEOUT", "-60"),
        ("TIDEGATE_MAX_CONCURRENT_RUNS", "-1"),
    ],
)
def test_zero_or_negative_is_refused_where_a_positive_number_is_required(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}={value!r}: must be "):
        Settings.load()


def test_values_from_the_environment_and_the_file_make_one_settings_object(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = clean_env / "home"
    home.mkdir()
    (home / "tidegate.toml").write_text(
        "[run_queue]\nmax_concurrent_runs = 3\n[run_monitor]\nheartbeat_timeout_seconds = 45\n"
    )
    monkeypatch.setenv("TIDEGATE_HOME", str(home))
    monkeypatch.setenv("TIDEGATE_HEARTBEAT_SECONDS", "2.5")
    monkeypatch.setenv("TIDEGATE_VISIBILITY_TIMEOUT", "7200")
    settings = Settings.load()
    assert settings.source == str(home / "tidegate.toml")
    assert (settings.heartbeat_seconds, settings.visibility_timeout) == (2.5, 7200)
    assert settings.run_queue.max_concurrent_runs == 3
    assert settings.run_monitor.heartbeat_timeout_seconds == 45.0
    # Defaults derived from TIDEGATE_HOME, as before.
    assert settings.home == home.resolve()
    assert settings.database_url == f"sqlite:///{home.resolve() / 'tidegate.db'}"
    assert settings.io_base_dir == home.resolve() / "storage"
    assert settings.broker_url == "redis://localhost:6379/0"

    monkeypatch.setenv("TIDEGATE_MAX_CONCURRENT_RUNS", "8")  # the environment wins over the file
    monkeypatch.setenv("TIDEGATE_IO_BASE_DIR", "elsewhere")
    monkeypatch.setenv("TIDEGATE_DATABASE_URL", "")  # empty counts as unset
    settings = Settings.load()
    assert settings.run_queue.max_concurrent_runs == 8
    assert settings.run_monitor.heartbeat_timeout_seconds == 45.0
    assert settings.io_base_dir == clean_env / "elsewhere"
    assert settings.database_url == f"sqlite:///{home.resolve() / 'tidegate.db'}"


def test_defaults_read_neither_the_environment_nor_a_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "tidegate.toml").write_text("[run_queue]\nmax_concurrent_runs = 1\n")
    monkeypatch.setenv("TIDEGATE_MAX_CONCURRENT_RUNS", "2")
    monkeypatch.setenv("TIDEGATE_HEARTBEAT_SECONDS", "abc")
    defaults = Settings.defaults()
    assert defaults.run_queue.max_concurrent_runs is None
    assert defaults.heartbeat_seconds == 10.0
    assert defaults.source == "defaults"


def test_secrets_never_appear_in_a_repr_or_an_error(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDEGATE_DATABASE_URL", f"postgresql://postgres:{SECRET}@db.internal:5432/tidegate")
    monkeypatch.setenv("TIDEGATE_BROKER_URL", f"redis://default:{SECRET}@redis.internal:6379/0")
    monkeypatch.setenv("TIDEGATE_FLOWER_BASIC_AUTH", f"operator:{SECRET}")
    settings = Settings.load()
    assert settings.database_url.endswith(f":{SECRET}@db.internal:5432/tidegate")  # the program gets it
    assert settings.flower_basic_auth is not None
    assert settings.flower_basic_auth.get_secret_value() == f"operator:{SECRET}"
    for shown in (repr(settings), str(settings)):
        assert SECRET not in shown, shown
        assert "postgresql://postgres:***@db.internal:5432/tidegate" in shown
        assert "redis://default:***@redis.internal:6379/0" in shown
    assert settings.safe_database_url == "postgresql://postgres:***@db.internal:5432/tidegate"

    monkeypatch.setenv("TIDEGATE_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no chained pydantic error


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres:pw@h:5432/db", "postgresql://postgres:***@h:5432/db"),
        ("redis://:pw@h:6379/5", "redis://:***@h:6379/5"),
        ("redis://default:p@ss@h/0", "redis://default:***@h/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("sqlite:////var/lib/tidegate.db", "sqlite:////var/lib/tidegate.db"),
        ("memory://localhost/", "memory://localhost/"),
    ],
)
def test_safe_url_hides_only_the_password(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_the_cli_shows_a_malformed_variable_as_one_line_and_exits_two(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_HOME=str(tmp_path / "home"), TIDEGATE_HEARTBEAT_SECONDS="abc")
    result = subprocess.run(
        [TIDEGATE, "runs", "list"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == "error: TIDEGATE_HEARTBEAT_SECONDS='abc': must be a number"
