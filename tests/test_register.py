"""`proto2prod register`: weights trained elsewhere become a version like any other, or
nothing is written at all."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from proto2prod import NullProgress, Settings, load_definition
from proto2prod.cli import app
from proto2prod.registry import Registry, fetch
from proto2prod.weights import load_safetensors, save_safetensors

USER = Path(__file__).parent / "user_project"
IRIS = str(USER / "my_model.py")
runner = CliRunner()


@pytest.fixture(scope="module")
def iris_weights() -> dict[str, torch.Tensor]:
    """Weights "trained elsewhere": the definition's own training, run outside proto2prod."""
    return dict(load_definition(IRIS).model.train(NullProgress()).weights)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    env = {"PROTO2PROD_HOME": str(home), "MLFLOW_TRACKING_URI": ""}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def registry(home: Path) -> Registry:
    return Registry(Settings.from_env({"PROTO2PROD_HOME": str(home)}))


def no_model_registered(home: Path) -> bool:
    from proto2prod.errors import ModelNotFound

    try:
        registry(home).versions("iris")
    except ModelNotFound:
        return True
    return False


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors"])
def test_a_state_dict_file_registers_like_a_trained_version(
    home: Path, tmp_path: Path, iris_weights: dict[str, torch.Tensor], suffix: str
) -> None:
    path = tmp_path / f"iris{suffix}"
    if suffix == ".safetensors":
        save_safetensors(iris_weights, path)
    else:
        torch.save(iris_weights, path)
    code, out, err = cli(
        home,
        "register",
        IRIS,
        "--weights",
        str(path),
        "--metric",
        "accuracy=0.97",
        "--param",
        "epochs=300",
        "--param",
        "optimizer=adam",
        "--alias",
        "production",
    )
    assert code == 0, err
    assert "registered iris version 1 with alias @production" in out

    info = registry(home).resolve("iris@production")
    assert info.metrics == {"accuracy": 0.97}
    assert info.tags["proto2prod.origin.by"] == "register"
    assert info.tags["proto2prod.origin.file"] == path.name
    assert len(info.tags["proto2prod.origin.sha256"]) == 64
    # The same contents as a version from `train`: verified weights, fields, entry point.
    assert info.spec == load_definition(IRIS).model.spec()
    assert info.tags["proto2prod.entry"].endswith("my_model.py:Iris")
    local = fetch(registry(home), "iris@production")  # sha256-verified
    assert all(torch.equal(load_safetensors(local.weights)[k], v) for k, v in iris_weights.items())
    run = registry(home).client.get_run(info.run_id)
    assert run.data.params == {"epochs": "300", "optimizer": "adam"}


def test_a_training_checkpoint_with_a_wrapped_state_dict_registers(
    home: Path, tmp_path: Path, iris_weights: dict[str, torch.Tensor]
) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 300, "state_dict": iris_weights, "lr": 0.03}, path)
    assert cli(home, "register", IRIS, "--weights", str(path))[0] == 0
    assert [v.version for v in registry(home).versions("iris")] == ["1"]


def test_a_pickled_whole_model_is_refused_unread_with_the_fix(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(load_definition(IRIS).model.network(), path)
    code, _, err = cli(home, "register", IRIS, "--weights", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "torch.save(model.state_dict(), PATH)" in err
    assert no_model_registered(home)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda w: {**w, "0.weight": torch.zeros(8, 4)}, "do not fit"),  # another shape
        (lambda w: {k: v for k, v in w.items() if k != "2.bias"}, "do not fit"),  # missing key
        (lambda w: {**w, "extra.weight": torch.zeros(1)}, "do not fit"),  # unexpected key
        (lambda w: {k: v * math.nan for k, v in w.items()}, "does not fit `outputs`"),  # NaN
        (lambda w: {"epoch": 3, "loss": 0.1}, "without a state dict"),
    ],
)
def test_weights_that_do_not_fit_write_nothing(
    home: Path, tmp_path: Path, iris_weights: dict[str, torch.Tensor], make, message: str
) -> None:
    path = tmp_path / "bad.pt"
    torch.save(make(iris_weights), path)
    code, _, err = cli(home, "register", IRIS, "--weights", str(path), "--alias", "production")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert no_model_registered(home)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--weights", "missing.pt"], "no such file"),
        (["--weights", "{weights}", "--metric", "accuracy"], "write NAME=VALUE"),
        (["--weights", "{weights}", "--metric", "accuracy=nan"], "must be a finite number"),
        (["--weights", "{weights}", "--metric", "accuracy=high"], "must be a finite number"),
        (["--weights", "{weights}", "--alias", "latest"], "not a usable alias"),
        (["--weights", "{text}"], "expected a .safetensors file or a PyTorch state dict"),
        (["--weights", "{garbage}"], "not a readable PyTorch file"),
    ],
)
def test_bad_register_input_is_one_line_exit_2(
    home: Path, tmp_path: Path, iris_weights: dict[str, torch.Tensor], args: list[str], message: str
) -> None:
    files = {
        "weights": tmp_path / "iris.pt",
        "text": tmp_path / "notes.txt",
        "garbage": tmp_path / "garbage.pt",
    }
    torch.save(iris_weights, files["weights"])
    files["text"].write_text("not weights")
    files["garbage"].write_bytes(b"hello world, not weights")
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    code, _, err = cli(home, "register", IRIS, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert no_model_registered(home)


def test_a_definition_without_train_registers_and_train_says_so(
    home: Path, tmp_path: Path, iris_weights: dict[str, torch.Tensor]
) -> None:
    source = (USER / "my_model.py").read_text()
    untrained = source[: source.index("    def train(")]  # the same model, no train()
    definition = tmp_path / "iris_weights_only.py"
    definition.write_text(untrained)
    weights = tmp_path / "iris.safetensors"
    save_safetensors(iris_weights, weights)

    code, _, err = cli(home, "train", str(definition))
    assert code == 2 and "has no train(); register weights trained elsewhere" in err
    assert f"proto2prod register {definition} --weights PATH" in err
    assert cli(home, "register", str(definition), "--weights", str(weights))[0] == 0
    assert registry(home).resolve("iris/1").tags["proto2prod.origin.by"] == "register"


def test_versions_json_stays_json_with_a_nan_metric(
    home: Path, tmp_path: Path, iris_weights
) -> None:
    import json

    path = tmp_path / "iris.pt"
    torch.save(iris_weights, path)
    definition = load_definition(IRIS)
    from proto2prod import Trained
    from proto2prod.registry import publish

    publish(registry(home), definition, Trained(weights=iris_weights, metrics={"loss": math.nan}))
    code, out, _ = cli(home, "versions", "iris", "--json")

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    assert code == 0
    assert json.loads(out, parse_constant=refuse)[0]["metrics"] == {"loss": None}
