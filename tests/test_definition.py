"""A definition is checked when it loads, with a message naming the rule it breaks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proto2prod import DefinitionError, load_definition
from tests.conftest import EXAMPLES

GOOD = """
import torch
from torch import nn
import proto2prod
from proto2prod import fields

class Tiny(proto2prod.Model):
    \"\"\"Two numbers in, a class out.\"\"\"
    name = "tiny"
    inputs = fields.Tensor(shape=[2])
    outputs = fields.Label(classes=["a", "b"])
    def network(self):
        return nn.Linear(2, 2)
    def examples(self):
        return [[0.0, 1.0], [1.0, 0.0]]
    def train(self, progress, quick=False):
        return proto2prod.Trained(weights=self.network().state_dict())
"""


def write(tmp_path: Path, source: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_good_definition_loads_with_entry_and_source(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    definition = load_definition(path)
    assert definition.model.name == "tiny"
    assert definition.entry == f"{path.as_posix()}:Tiny"
    assert "class Tiny" in definition.source
    assert definition.model.description == "Two numbers in, a class out."
    assert load_definition(f"{path}:Tiny").model.name == "tiny"


def test_importable_entry_point() -> None:
    definition = load_definition("proto2prod.examples.tabular:Wine")
    assert definition.entry == "proto2prod.examples.tabular:Wine"


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (('name = "tiny"', 'name = "has space"'), "`name` must be 1-64 letters"),
        (('name = "tiny"', ""), "`name` must be"),
        (
            ("inputs = fields.Tensor(shape=[2])", "inputs = 5"),
            "`inputs` must be a proto2prod field",
        ),
        (
            (
                'outputs = fields.Label(classes=["a", "b"])',
                'outputs = fields.Table(features=["a"])',
            ),
            "cannot be used as output",
        ),
        (("return [[0.0, 1.0], [1.0, 0.0]]", "return []"), "non-empty list"),
        (
            ("return [[0.0, 1.0], [1.0, 0.0]]", "return [[0.0, 1.0, 2.0]]"),
            "`examples()[0]` does not fit",
        ),
        (("return nn.Linear(2, 2)", "return nn.Linear(2, 3)"), "2 logits per item"),
        (("return nn.Linear(2, 2)", "return nn.Linear(3, 2)"), "`network()` fails on a batch"),
        (("return nn.Linear(2, 2)", "return 'net'"), "must return a torch.nn.Module"),
    ],
)
def test_broken_rules_are_named(tmp_path: Path, change: tuple[str, str], rule: str) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(DefinitionError) as caught:
        load_definition(path)
    assert rule in str(caught.value)
    assert str(path) in str(caught.value)


def test_missing_method(tmp_path: Path) -> None:
    source = GOOD.replace("    def network(self):\n        return nn.Linear(2, 2)\n", "")
    with pytest.raises(DefinitionError, match=r"`network\(\)` must be implemented"):
        load_definition(write(tmp_path, source))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "defines no proto2prod.Model subclass"),
        ("import nonexistent_package_xyz\n", "importing it failed with ModuleNotFoundError"),
        (
            GOOD + "\nclass Other(Tiny):\n    name = 'other'\n",
            "defines several models (Other, Tiny)",
        ),
    ],
)
def test_files_without_exactly_one_model(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_definition(write(tmp_path, source))


def test_missing_file_and_wrong_class(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="no such file"):
        load_definition(tmp_path / "absent.py")
    with pytest.raises(DefinitionError, match="'Nope' is not a proto2prod.Model subclass"):
        load_definition(f"{write(tmp_path, GOOD)}:Nope")


@pytest.mark.parametrize("example", ["digits.py", "tabular.py", "heavy.py"])
def test_examples_import_no_ui_or_serving_library(example: str) -> None:
    source = (EXAMPLES / example).read_text()
    for banned in ("gradio", "streamlit", "bentoml", "mlflow", "fastapi"):
        assert f"import {banned}" not in source and f"from {banned}" not in source
