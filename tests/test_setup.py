"""What the README promises about the project itself: links that resolve inside the
repository, a licence file that matches pyproject's, and a demo that installs only what it
needs."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve_to_files_inside_the_repository(doc: Path) -> None:
    links = [link for link in LINK.findall(doc.read_text()) if "://" not in link]
    assert links or doc.name != "README.md"
    for link in links:
        target = (doc.parent / link.split("#")[0]).resolve()
        assert target.is_relative_to(ROOT), f"{doc.name} links outside the repository: {link}"
        assert target.exists(), f"{doc.name} links to a missing file: {link}"


def test_the_licence_file_is_the_one_pyproject_names() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_make_demo_installs_the_ui_and_the_service_only(tmp_path: Path) -> None:
    # -n prints the commands without running them; -B as on a fresh machine
    venv = tmp_path / "venv"
    plan = subprocess.run(
        ["make", "-n", "-B", "demo", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-e '.[ui,serve]'" in plan
    assert "dev" not in plan and "[all" not in plan and "bench" not in plan
    assert "torch==" in plan  # the CPU build first, before anything pulls in a CUDA one
