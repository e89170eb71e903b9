"""One settings class: the REELFLOW_* environment read and checked in one place, and the README's
configuration table made from it."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from services.settings import Settings, SettingsError, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_settings_class():
    table = markdown_table()
    assert table in README.read_text(), "README's configuration table is stale: python -m services.settings"
    names = re.findall(r"^\| `REELFLOW_([A-Z_]+)` \|", table, re.M)
    assert [n.lower() for n in names] == list(Settings.model_fields)
    assert all(field.description for field in Settings.model_fields.values())


def test_the_environment_is_read_and_checked(monkeypatch):
    monkeypatch.setenv("REELFLOW_LEASE_S", "7.5")
    monkeypatch.setenv("REELFLOW_BATCH_SIZE", "auto")
    monkeypatch.setenv("REELFLOW_ALLOWED_ROOTS", "/videos:/more")
    monkeypatch.setenv("REELFLOW_ALLOW_DEVICES", "1")
    settings = Settings.from_env()
    assert settings.lease_s == 7.5 and settings.batch_size == 0 and settings.batch_limit == 16
    assert settings.sources.allowed_roots == (Path("/videos"), Path("/more")) and settings.sources.allow_devices
    copy = pickle.loads(pickle.dumps(settings))  # Ray sends settings to its actors
    assert copy == settings and copy.sources == settings.sources
    assert settings.replace(home="/tmp/h").home == Path("/tmp/h") and settings.replace(home="/tmp/h").lease_s == 7.5


@pytest.mark.parametrize("variable, value, named", [
    ("REELFLOW_LEASE_S", "-1", "REELFLOW_LEASE_S='-1'"),
    ("REELFLOW_PIPELINE", "turbo", "REELFLOW_PIPELINE='turbo'"),
    ("REELFLOW_MIN_REPLICAS", "3", "REELFLOW_MIN_REPLICAS=3 is above REELFLOW_MAX_REPLICAS=1"),
])
def test_a_bad_variable_is_one_line_naming_it(monkeypatch, variable, value, named):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as e:
        Settings.from_env()
    assert named in str(e.value) and "\n" not in str(e.value)
