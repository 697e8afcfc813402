"""The CLI: Typer's CliRunner for the commands, subprocesses for start-up cost and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proto2prod.cli import app
from tests.conftest import BIN, EXAMPLES
from tests.processes import free_port

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"PROTO2PROD_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": ""}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_train_versions_promote_rollback(env: dict[str, str]) -> None:
    code, out, _ = invoke(
        env, "train", str(EXAMPLES / "digits.py"), "--alias", "staging", "--quick"
    )
    assert code == 0, out
    assert "registered digits version 1 with alias @staging: models:/digits/1" in out
    code, out, _ = invoke(env, "train", str(EXAMPLES / "digits.py"), "--quick")
    assert code == 0 and "version 2" in out

    code, out, _ = invoke(env, "versions", "digits", "--json")
    listed = json.loads(out)
    assert [v["version"] for v in listed] == ["2", "1"]
    assert listed[1]["aliases"] == ["staging"]
    assert set(listed[0]) == {"version", "aliases", "metrics", "run_id"}
    assert listed[0]["metrics"]["accuracy"] > 0.5

    code, out, _ = invoke(env, "promote", "digits", "1")
    assert code == 0 and "digits@production -> version 1" in out
    code, out, _ = invoke(env, "promote", "digits", "2")
    assert code == 0 and "(was version 1)" in out
    code, out, _ = invoke(env, "rollback", "digits")
    assert code == 0 and "digits@production -> version 1 (rolled back from 2)" in out

    code, out, _ = invoke(env, "versions", "digits")
    assert code == 0 and "@production" in out and "@staging" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "missing.py"], "no such file: missing.py"),
        (["train", str(Path(__file__))], "defines no proto2prod.Model subclass"),
        (["train", str(EXAMPLES / "digits.py"), "--alias", "v2"], "not a usable alias"),
        (["serve", "digits@production", "--workers", "0"], "--workers 0: give 1 or more"),
        (["bench", "--scenarios", "chaos"], "--scenarios: unknown ['chaos']"),
        (["bench", "--architectures", "triton"], "--architectures: unknown ['triton']"),
        # A GPU that is not there (none here; on a GPU machine, a 100th): the GPU run card
        # says so before it starts anything.
        (["bench", "--device", "cuda:99", "--models", "heavy"], "--device cuda:99: torch sees"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    env: dict[str, str], args: list[str], message: str
) -> None:
    code, out, err = invoke(env, *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    "args", [["versions", "nope"], ["promote", "nope", "1"], ["rollback", "nope"]]
)
def test_an_unknown_model_is_one_line_and_exit_3(env: dict[str, str], args: list[str]) -> None:
    code, out, err = invoke(env, *args)
    assert code == 3  # not found: told apart from a malformed input (2) and a retry (75)
    assert "no model named 'nope'" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err + out


def test_unknown_version_alias_and_no_half_registration(env: dict[str, str]) -> None:
    assert invoke(env, "train", str(EXAMPLES / "tabular.py"), "--quick")[0] == 0
    code, _, err = invoke(env, "promote", "wine", "7")
    assert code == 3 and "has no version 7" in err
    code, _, err = invoke(env, "rollback", "wine", "--alias", "staging")
    assert code == 3 and "has no alias 'staging'" in err
    code, out, _ = invoke(env, "versions", "wine", "--json")
    assert [v["version"] for v in json.loads(out)] == ["1"]


def test_unreachable_tracking_server_exits_75_retry(env: dict[str, str]) -> None:
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"
    code, _, err = invoke(env, "versions", "digits")
    assert code == 75  # EX_TEMPFAIL: the input was fine, the same command can work later
    assert "cannot reach the MLflow tracking server" in err


def test_help_imports_no_heavy_library() -> None:
    probe = (
        "import sys; from proto2prod.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'mlflow', 'bentoml', 'gradio', 'streamlit', 'numpy')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout


def test_console_script_train_in_a_subprocess(tmp_path: Path) -> None:
    env = {**os.environ, "PROTO2PROD_HOME": str(tmp_path / "home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [str(BIN / "proto2prod"), "train", str(EXAMPLES / "tabular.py"), "--quick", "-a", "prod"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "registered wine version 1 with alias @prod" in done.stdout
    assert (tmp_path / "home" / "mlflow.db").is_file()
    bad = subprocess.run(
        [str(BIN / "proto2prod"), "promote", "wine", "5"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode == 3 and "has no version 5" in bad.stderr  # not found


BROKEN = {
    "network": (
        "def network(self):\n        raise RuntimeError('no GPU kernel')",
        "`network()` raised RuntimeError: no GPU kernel",
    ),
    "examples": (
        "def examples(self):\n        return 1 / 0",
        "`examples()` raised ZeroDivisionError: division by zero",
    ),
    "train": (
        "def train(self, progress, quick=False):\n        raise KeyError('lr')",
        "train() raised KeyError: 'lr'",
    ),
    "train_none": (
        "def train(self, progress, quick=False):\n        return None",
        "train() must return proto2prod.Trained(weights=..., metrics=...); it returned NoneType",
    ),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_failing_definition_is_one_line_exit_2(
    env: dict[str, str], tmp_path: Path, broken: str
) -> None:
    source = (Path(__file__).parent / "user_project" / "my_model.py").read_text()
    method, message = BROKEN[broken]
    name = method.split("(")[0].removeprefix("def ")
    start = source.index(f"    def {name}(")
    end = source.find("\n    def ", start + 10)
    path = tmp_path / f"broken_{broken}.py"
    path.write_text(source[:start] + "    " + method + "\n" + (source[end:] if end != -1 else ""))
    code, out, err = invoke(env, "train", str(path), "--quick")
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
