"""digits/settings.py: the one module that reads the environment, and the documents made
from it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from digits import settings
from digits.settings import BY_NAME, SETTINGS, SettingsError, load

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("api", "worker", "trainer", "models", "digits")
ENV_READ = re.compile(r"os\.environ|getenv")


def test_defaults_when_nothing_is_set():
    s = load(environ={})
    for setting in SETTINGS:
        assert s[setting.name] == setting.default, setting.name
    assert s.REDIS_URL == "redis://127.0.0.1:6379/0"
    assert isinstance(s.PREDICT_TIMEOUT, float) and isinstance(s.WORKERS, int)


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("TRUE", True), (" yes ", True),
                                            ("on", True), ("0", False), ("false", False),
                                            ("No", False), ("off", False)])
def test_booleans(raw, value):
    assert load(environ={"COALESCE": raw}).COALESCE is value


def test_typed_values_and_an_empty_number_means_the_default():
    s = load(environ={"WORKERS": " 4 ", "PREDICT_TIMEOUT": "2", "BATCH_MAX": "",
                      "LOG_LEVEL": "debug", "RATE_LIMIT": "5/second"})
    assert (s.WORKERS, s.PREDICT_TIMEOUT, s.BATCH_MAX) == (4, 2.0, 128)
    assert s.LOG_LEVEL == "DEBUG" and s.RATE_LIMIT == "5/second"


@pytest.mark.parametrize(("env", "message"), [
    ({"WORKERS": "abc"}, "WORKERS must be an integer (got 'abc')"),
    ({"PREDICT_TIMEOUT": "soon"}, "PREDICT_TIMEOUT must be a number (got 'soon')"),
    ({"COALESCE": "maybe"}, "COALESCE must be true or false (got 'maybe')"),
    ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1 (got '0')"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
])
def test_a_bad_value_names_its_variable(env, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        load(environ=env)


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(SettingsError) as err:
        load(environ={"WORKERS": "x", "BATCH_MAX": "y"})
    assert "WORKERS" in str(err.value) and "BATCH_MAX" in str(err.value)


def test_overrides_are_checked_too():
    assert load({"PREDICT_TIMEOUT": 3}, environ={}).PREDICT_TIMEOUT == 3.0
    assert load({"COALESCE": "off"}, environ={}).COALESCE is False
    with pytest.raises(SettingsError, match="NO_SUCH is not a setting"):
        load({"NO_SUCH": 1}, environ={})
    with pytest.raises(SettingsError, match="WORKERS must be int"):
        load({"WORKERS": 1.5}, environ={})


def test_settings_are_read_only():
    s = load(environ={})
    with pytest.raises(AttributeError):
        s.WORKERS = 3
    with pytest.raises(AttributeError, match="no setting named NOPE"):
        _ = s.NOPE


def test_every_setting_is_described():
    for setting in SETTINGS:
        assert setting.help.endswith("."), setting.name
        assert setting.roles and set(setting.roles) <= set(settings.ROLES), setting.name
        assert setting.kind in (str, int, float, bool), setting.name
        assert isinstance(setting.default, setting.kind), setting.name
    assert len(BY_NAME) == len(SETTINGS), "a name is defined twice"


def test_generated_documents_are_current():
    """docs/configuration.md's table and .env.example are made from the module."""
    assert settings.ENV_FILE.read_text() == settings.env_example(), \
        "run `python -m digits.settings env`"
    docs = settings.DOCS_FILE.read_text()
    assert docs == settings.docs_with_table(docs), "run `python -m digits.settings docs`"
    for setting in SETTINGS:
        assert f"| `{setting.name}` |" in docs
        assert f"# {setting.name}=" in settings.ENV_FILE.read_text()


def test_only_the_settings_module_reads_the_environment():
    readers = []
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "digits" / "settings.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if ENV_READ.search(line):
                    readers.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert readers == []


@pytest.mark.parametrize("module", ["digits.stack", "worker", "trainer"])
def test_entry_points_refuse_a_bad_value_in_one_line(module):
    env = {"WORKERS": "abc", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "configuration error: WORKERS must be an integer (got 'abc')"


def test_gunicorn_refuses_a_bad_value_in_one_line():
    env = {"GUNICORN_THREADS": "many", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "api/gunicorn_conf.py",
                          "--check-config", "api:create_app()"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "configuration error: GUNICORN_THREADS must be an integer (got 'many')" in run.stderr
    assert "Traceback" not in run.stderr
