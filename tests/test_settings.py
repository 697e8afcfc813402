"""Settings declared once: the classes, their bounds, the CLI's help and the README's table
all come from the declarations in proto2prod/setting.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess

import pytest

from proto2prod.errors import SettingsError
from proto2prod.setting import declarations
from proto2prod.settings import PrototypeSettings, ServiceSettings, Settings
from tests.conftest import BIN, ROOT

CLASSES = (Settings, ServiceSettings, PrototypeSettings)


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PROTO2PROD_")}
    return subprocess.run(
        [str(BIN / "proto2prod"), *args],
        capture_output=True,
        text=True,
        env={**environ, "COLUMNS": "200", **env},
        timeout=60,
    )


def test_the_readme_table_is_the_declarations() -> None:
    done = cli("settings", "--markdown")
    assert done.returncode == 0, done.stderr
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert table, "README.md lost its settings table markers"
    assert table.group(1) == done.stdout.strip(), "run: proto2prod settings --markdown"
    for cls in CLASSES:  # every variable is in it, once
        for _, _, declared in declarations(cls):
            if declared.env:
                assert table.group(1).count(f"| `{declared.env}` |") == 1, declared.env


def test_every_field_is_declared_and_unset_means_its_default() -> None:
    service = ServiceSettings.from_env({"PROTO2PROD_MODEL": "digits@production"})
    prototype = PrototypeSettings.from_env({"PROTO2PROD_UI_BACKEND": "http://127.0.0.1:1"})
    for settings in (Settings.from_env({}), service, prototype):
        declared = {f.name for f, _, _ in declarations(type(settings))}
        assert declared == {f.name for f in dataclasses.fields(settings)}
    assert dataclasses.asdict(service) == dataclasses.asdict(
        ServiceSettings(model="digits@production")
    )


@pytest.mark.parametrize("cls", [Settings, ServiceSettings])
def test_each_numeric_setting_refuses_what_is_out_of_its_bounds(cls: type) -> None:
    base = {"PROTO2PROD_MODEL": "digits@production"}
    for field, kind, declared in declarations(cls):
        if kind not in (int, float) or declared.env is None:
            continue
        with pytest.raises(SettingsError, match=f"{declared.env}='soon' is not"):
            cls.from_env({**base, declared.env: "soon"})
        with pytest.raises(SettingsError, match=f"{declared.env}='-1' must be >"):
            cls.from_env({**base, declared.env: "-1"})
        taken = cls.from_env({**base, declared.env: str(kind(field.default) or 1)})
        assert getattr(taken, field.name) == kind(field.default or 1), declared.env


def test_defaults_that_follow_another_setting_and_one_variable_for_two_fields() -> None:
    s = ServiceSettings.from_env(
        {
            "PROTO2PROD_MODEL": "digits@production",
            "PROTO2PROD_POLL_S": "120",
            "PROTO2PROD_MAX_QUEUE": "100",
            "PROTO2PROD_MAX_BODY_MB": "64",
            "PROTO2PROD_CANARY": "challenger:10",
        }
    )
    assert (s.poll_max_s, s.max_items, s.max_inflight_mb) == (120, 100, 64)
    assert (s.canary, s.canary_percent) == ("challenger", 10)
    with pytest.raises(SettingsError, match="PROTO2PROD_CANARY='challenger': give ALIAS:PERCENT"):
        ServiceSettings.from_env({"PROTO2PROD_MODEL": "d@p", "PROTO2PROD_CANARY": "challenger"})
    with pytest.raises(SettingsError, match="PROTO2PROD_MODEL is not set"):
        ServiceSettings.from_env({})
    assert Settings.from_env({}).keys_file == Settings.from_env({}).home / "keys.json"
    assert not Settings.from_env({}).keys_required
    given = Settings.from_env({"PROTO2PROD_KEYS_FILE": "/tmp/k.json"})
    assert given.keys_required and str(given.keys_file) == "/tmp/k.json"


def test_the_ui_settings_travel_to_another_process_and_back() -> None:
    ui = PrototypeSettings(definition="examples/digits.py", model="digits@production")
    assert PrototypeSettings.from_env(ui.environ()) == ui


def test_the_settings_command_shows_what_is_set_but_never_a_secret() -> None:
    done = cli(
        "settings",
        "--json",
        PROTO2PROD_POLL_S="3",
        PROTO2PROD_ADMIN_TOKEN="a-token-never-printed",
        PROTO2PROD_WEBHOOK_SECRET="a-secret-never-printed",
    )
    assert done.returncode == 0, done.stderr
    assert "never-printed" not in done.stdout
    rows = {row["variable"]: row for row in json.loads(done.stdout)}
    assert rows["PROTO2PROD_POLL_S"]["set"] == "3" and rows["PROTO2PROD_POLL_S"]["default"] == 10
    assert rows["PROTO2PROD_ADMIN_TOKEN"]["set"] == "(set, not shown)"
    assert rows["PROTO2PROD_MAX_QUEUE"]["set"] is None


def test_the_serve_help_comes_from_the_declarations() -> None:
    done = cli("serve", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.replace("│", " ").split())
    assert "The share of requests (0 < rate <= 1) the shadow also runs. (default: 0.1; > 0)" in text
    assert "How often the alias is re-resolved. (default: 10; > 0)" in text
