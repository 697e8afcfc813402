"""proto2prod as a user gets it: the wheel installed into a fresh venv, used from a folder of
the user's own (tests/user_project) that holds its own service.py, registry.py and
prototype/, each of which raises if anything imports it.

The commands are the README's, run for real: train, serve, predict, register weights trained
elsewhere, build a Bento and serve it from the Bento store, and MLflow's own
`mlflow models serve` on the same version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from proto2prod.service.distribution import SOURCE_JUNK
from tests.conftest import ROOT
from tests.processes import free_port, server

pytestmark = pytest.mark.server

USER_PROJECT = Path(__file__).parent / "user_project"
VIRGINICA = {"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
TORCH = os.environ.get("PROTO2PROD_TEST_TORCH", "torch==2.13.0")  # the Makefile's CPU build


@dataclass(frozen=True)
class Project:
    """A fresh venv with the built wheel, and the user's folder (the working directory)."""

    venv: Path
    folder: Path
    wheel: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PROTO2PROD_", "MLFLOW_", "BENTOML_", "VIRTUAL_ENV", "PYTHON"))
        }
        path = f"{self.bin}:{environ['PATH']}"  # mlflow models serve execs uvicorn from PATH
        return {**environ, "PATH": path, "BENTOML_DO_NOT_TRACK": "true", **extra}

    def run(self, *args: str, timeout: float = 300, **env: str) -> str:
        done = subprocess.run(
            [str(a) for a in args],
            cwd=self.folder,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("user")
    # From a clean copy of the tree: pip's in-tree build/ could carry stale modules.
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*SOURCE_JUNK))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), source],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (root / "dist").glob("proto2prod-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH], check=True, capture_output=True, timeout=900)
    subprocess.run([*pip, f"{wheel}[serve]"], check=True, capture_output=True, timeout=900)
    folder = root / "my-project"
    shutil.copytree(USER_PROJECT, folder)
    return Project(venv=venv, folder=folder, wheel=wheel)


@pytest.fixture(scope="module")
def trained(project: Project) -> Project:
    """`proto2prod train my_model.py --alias production`: iris version 1, in the embedded
    registry under the folder's own .proto2prod/."""
    out = project.run(project.bin / "proto2prod", "train", "my_model.py", "--alias", "production")
    assert "registered iris version 1 with alias @production" in out
    return project


def predict(url: str, item: dict[str, float]) -> dict:
    response = httpx.post(f"{url}/predict", json={"inputs": [item]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_wheel_installs_one_package_and_imports_from_the_venv(project: Project) -> None:
    with zipfile.ZipFile(project.wheel) as wheel:
        top_level = wheel.read("proto2prod-0.1.0.dist-info/top_level.txt").decode().split()
        names = wheel.namelist()
    assert top_level == ["proto2prod"]
    for shipped in ("server.js", "index.html", "package.json", "package-lock.json", "api.d.ts"):
        assert f"proto2prod/examples/web-node/{shipped}" in names, shipped  # the node bench
    assert not any("node_modules" in name for name in names)
    code = (
        "import proto2prod.service.app as s, proto2prod.registry as r;print(s.__file__, r.__file__)"
    )
    where = project.run(project.bin / "python", "-c", code, PROTO2PROD_MODEL="iris@production")
    assert all(p.startswith(str(project.venv)) for p in where.split()), where


def test_the_users_definition_type_checks_strictly_against_the_wheel(project: Project) -> None:
    """PEP 561: the wheel ships py.typed, so `mypy --strict` on the user's definition sees
    proto2prod's annotations (without it: 'module is installed, but missing library stubs
    or py.typed marker', and `class Iris(proto2prod.Model)` subclasses Any)."""
    with zipfile.ZipFile(project.wheel) as wheel:
        assert "proto2prod/py.typed" in wheel.namelist()
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            str(project.bin / "python"),
            "my_model.py",
            "notebook.py",
        ],
        cwd=project.folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Success: no issues found in 2 source files" in checked.stdout


def test_train_serve_and_predict_from_the_users_folder(trained: Project) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(trained.bin / "proto2prod"), "serve", "iris@production", "--port", str(port)]
    log = trained.folder / "serve.log"
    with server(args, f"{url}/readyz", log, env=trained.env(), timeout=150, cwd=trained.folder):
        answer = predict(url, VIRGINICA)
        assert answer["outputs"][0]["label"] == "virginica" and answer["version"] == "1"
        import bentoml

        with bentoml.SyncHTTPClient(url) as client:
            result = client.predict(inputs=[SETOSA, VIRGINICA])
        assert [o["label"] for o in result["outputs"]] == ["setosa", "virginica"]
        # the user's model from any client: the document the CLI prints is the one served,
        # and the package's own client answers from the user's venv
        printed = trained.run(trained.bin / "proto2prod", "openapi", "iris@production")
        served = httpx.get(f"{url}/openapi.json", timeout=10).json()
        assert json.loads(printed) == served and served["info"]["x-model"] == "iris"
        validate(served)
        code = (
            "import sys; from proto2prod.client import Client; "
            "print(Client(sys.argv[1]).predict([dict(zip(sys.argv[2::2], map(float, "
            "sys.argv[3::2])))]).outputs[0]['label'])"
        )
        pairs = [str(x) for key, value in VIRGINICA.items() for x in (key, value)]
        said = trained.run(trained.bin / "python", "-c", code, url, *pairs)
        assert said.strip() == "virginica"
    assert "proto2prod imported the user's own" not in log.read_text()


def test_register_weights_trained_elsewhere(trained: Project) -> None:
    out = trained.run(trained.bin / "python", "notebook.py", "iris-notebook.pt")
    accuracy = out.strip().split("=")[1]
    out = trained.run(
        trained.bin / "proto2prod",
        "register",
        "my_model.py",
        "--weights",
        "iris-notebook.pt",
        "--metric",
        f"accuracy={accuracy}",
        "--param",
        "source=notebook",
        "--alias",
        "staging",
    )
    assert "with alias @staging" in out
    listed = json.loads(trained.run(trained.bin / "proto2prod", "versions", "iris", "--json"))
    staging = next(v for v in listed if "staging" in v["aliases"])
    assert staging["metrics"] == {"accuracy": float(accuracy)}
    assert next(v for v in listed if "production" in v["aliases"])["version"] == "1"


def test_build_a_bento_then_serve_it_from_the_store(trained: Project, tmp_path: Path) -> None:
    bentoml_home = str(tmp_path / "bentoml")
    out = trained.run(
        trained.bin / "proto2prod",
        "build",
        "iris@production",
        "--version",
        "v1",
        BENTOML_HOME=bentoml_home,
    )
    assert "built Bento iris:v1" in out
    src = Path(bentoml_home) / "bentos" / "iris" / "v1" / "src"
    files = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
    assert files == ["bentofile.yaml", "my_model.py", "setup.sh", f"wheels/{trained.wheel.name}"]

    # From the store, in another folder, with only the registry's location in the environment.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = trained.env(
        BENTOML_HOME=bentoml_home, PROTO2PROD_HOME=str(trained.folder / ".proto2prod")
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # BentoML's default host is 0.0.0.0: without keys the Bento refuses it, in one line
    exposed = subprocess.run(
        [str(trained.bin / "bentoml"), "serve", "iris:v1", "--port", str(port)],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert exposed.returncode == 2, exposed.stderr[-2000:]
    errors = [line for line in exposed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refusing to listen on 0.0.0.0" in errors[0], exposed.stderr
    args = [
        str(trained.bin / "bentoml"),
        "serve",
        "iris:v1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with server(args, f"{url}/readyz", tmp_path / "bento.log", env=env, timeout=150, cwd=elsewhere):
        answer = predict(url, VIRGINICA)
        assert answer["outputs"][0]["label"] == "virginica" and answer["version"] == "1"
        meta = httpx.get(f"{url}/metadata", timeout=10).json()
        assert meta["reference"] == "iris@production"
        assert meta["definition"].startswith(str(Path(bentoml_home) / "bentos" / "iris"))


def test_mlflow_models_serve_with_the_readme_flags(trained: Project) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # README: MLFLOW_TRACKING_URI=sqlite:///.proto2prod/mlflow.db \
    #         mlflow models serve -m models:/iris@production --env-manager local -p 5001
    args = [
        str(trained.bin / "mlflow"),
        "models",
        "serve",
        "-m",
        "models:/iris@production",
        "--env-manager",
        "local",
        "-p",
        str(port),
    ]
    env = trained.env(MLFLOW_TRACKING_URI="sqlite:///.proto2prod/mlflow.db")
    log = trained.folder / "mlflow-serve.log"
    with server(args, f"{url}/ping", log, env=env, timeout=150, cwd=trained.folder):
        response = httpx.post(f"{url}/invocations", json={"inputs": [VIRGINICA]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == "virginica"
