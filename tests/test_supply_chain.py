"""Minimum versions that exclude known CVEs, in pyproject.toml and in what is installed.

The floors are the project's (docs/reliability.md, promise 14): releases below them have
published security advisories. `make audit` runs pip-audit over everything installed.
"""

from __future__ import annotations

import importlib.metadata
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import ROOT

FLOORS = {
    "gradio": "6.16",
    "streamlit": "1.54",
    "mlflow": "3.17",
    "bentoml": "1.4.40",
    "torch": "2.10",
}


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra
    requirements = [Requirement(line) for line in lines]
    return {r.name: r for r in requirements if r.name in FLOORS}


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_declared_minimum_excludes_the_vulnerable_releases(package: str) -> None:
    requirement = declared()[package]
    floor = Version(FLOORS[package])
    below = Version(f"{floor.major}.{floor.minor}.{max(floor.micro - 1, 0)}")
    if floor.micro == 0:
        below = Version(f"{floor.major}.{floor.minor - 1}.99")
    assert not requirement.specifier.contains(below, prereleases=True), requirement
    assert requirement.specifier.contains(floor, prereleases=True), requirement


@pytest.mark.parametrize("package", sorted(FLOORS))
def test_installed_release_is_at_or_above_the_floor(package: str) -> None:
    assert Version(importlib.metadata.version(package)) >= Version(FLOORS[package])
