"""Publish a trained model: one MLflow run, one logged model, one registered version.

What a version carries: params and metrics of the training; `weights.safetensors` (never
pickle); the definition's source as MLflow "models from code" (so `mlflow.pyfunc` and
`mlflow models serve` work on it); the fields' JSON schemas and a validated input example;
explicit pip requirements; the sha256 of each artifact proto2prod loads, as version tags;
the git commit when there is one. A publish that fails half-way leaves no version behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from proto2prod.definition import Definition
from proto2prod.errors import InvalidWeights, RegistryError
from proto2prod.fields import Record
from proto2prod.model import Model, Trained
from proto2prod.registry.client import TAG, Registry
from proto2prod.registry.failures import NOT_FOUND_CODES, mlflow_error
from proto2prod.registry.reference import check_alias

ENTRY = Path(__file__).with_name("pyfunc_entry.py")
NAMED_ENTRY = Path(__file__).with_name("pyfunc_named.py")
"""For named inputs: MLflow's signature then names a column per input key."""
WEIGHTS = "weights.safetensors"
DEFINITION = "definition.py"
REFERENCE = "reference_stats.json"
"""Reference statistics of inputs and outputs (proto2prod/statistics.py): drift checks."""


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    run_id: str
    alias: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_requirements() -> list[str]:
    """Explicit requirements: MLflow's inference takes 5-12 s and trips on torch's +cpu."""

    def pin(dist: str) -> str:
        try:
            return f"{dist}=={metadata.version(dist).split('+')[0]}"
        except metadata.PackageNotFoundError:
            return dist

    return [pin(d) for d in ("torch", "safetensors", "numpy", "pillow", "mlflow", "proto2prod")]


def _git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def check_weights(model: Model, weights: Mapping[str, Any]) -> None:
    """Weights fit the definition: a strict load into `network()`, every example through the
    Predictor, and outputs that fit `outputs` (weights from elsewhere can give NaN)."""
    from proto2prod.predictor import Predictor

    outputs = Predictor(model, weights, "cpu").predict_batch(model.examples())
    for i, output in enumerate(outputs):
        problem = model.outputs.output_problem(output)
        if problem:
            raise InvalidWeights(
                f"with these weights examples()[{i}] gives an output that does not fit "
                f"`outputs`: {problem}"
            )


def publish(
    registry: Registry,
    definition: Definition,
    trained: Trained,
    *,
    alias: str | None = None,
    source_path: Path | None = None,
    origin: Mapping[str, str] | None = None,
) -> Published:
    """Log `trained` as a new version of `definition.model.name`; optionally set `alias`.

    `origin` says where the weights came from, recorded as `proto2prod.origin.*` tags:
    `{"by": "train"}` by default, `register` adds the weights file and its sha256.
    """
    model = definition.model
    if alias is not None:
        check_alias(alias)
    check_weights(model, trained.weights)  # before anything is written to the registry
    experiment_id = experiment_for(registry, model.name)
    with tempfile.TemporaryDirectory(prefix="proto2prod-publish-") as tmp:
        files = _write_files(definition, trained, Path(tmp))
        # Only what is verified when read: the service and the cache check the weights and
        # the reference statistics (registry/cache.py); the logged definition is for
        # MLflow's own tools only.
        digests = {name: sha256_file(files[name]) for name in (WEIGHTS, REFERENCE)}
        tags = _tags(definition, digests, origin, source_path)
        with registry.errors(f"publishing {model.name}"), registry.quiet(), registry.fluent():
            run_id, info = _log_run(definition, trained, files, digests, tags, experiment_id)
            try:
                mv = _register(registry, model.name, info, run_id, tags)
            except BaseException:  # no version: leave no run behind that looks like one
                with contextlib.suppress(Exception):
                    registry.client.delete_run(run_id)
                raise
    version = str(mv.version)
    if alias is not None:
        _set_alias_or_undo(registry, model.name, version, alias)
    return Published(name=model.name, version=version, run_id=run_id, alias=alias)


def _write_files(definition: Definition, trained: Trained, folder: Path) -> dict[str, Path]:
    """The version's artifacts: safetensors weights, the definition, reference statistics."""
    from proto2prod.weights import save_safetensors

    files = {name: folder / name for name in (WEIGHTS, DEFINITION, REFERENCE)}
    save_safetensors(trained.weights, files[WEIGHTS])
    files[DEFINITION].write_text(definition.source)
    files[REFERENCE].write_text(json.dumps(_reference(definition.model, trained)))
    return files


def _tags(
    definition: Definition,
    digests: Mapping[str, str],
    origin: Mapping[str, str] | None,
    source_path: Path | None,
) -> dict[str, str]:
    tags = {
        f"{TAG}.entry": definition.entry,
        f"{TAG}.spec": json.dumps(definition.model.spec(), sort_keys=True),
        **{f"{TAG}.origin.{k}": v for k, v in (origin or {"by": "train"}).items()},
        **{f"{TAG}.sha256.{name}": digest for name, digest in digests.items()},
    }
    commit = _git_commit(source_path.parent if source_path else Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _log_run(
    definition: Definition,
    trained: Trained,
    files: Mapping[str, Path],
    digests: Mapping[str, str],
    tags: Mapping[str, str],
    experiment_id: str,
) -> tuple[str, Any]:
    """One MLflow run with the params, metrics and the pyfunc model: (run id, model info)."""
    import mlflow

    model = definition.model
    named = isinstance(model.inputs, Record)
    metadata = {
        "entry": definition.entry,
        "spec": model.spec(),
        "schema": {"inputs": model.inputs.json_schema(), "outputs": model.outputs.json_schema()},
        "sha256": dict(digests),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=model.name) as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params({k: str(v)[:500] for k, v in trained.params.items()})
        mlflow.log_metrics(trained.metrics)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(NAMED_ENTRY if named else ENTRY),
            signature=_named_signature(model) if named else None,
            artifacts={
                "weights": str(files[WEIGHTS]),
                "definition": str(files[DEFINITION]),
                "reference": str(files[REFERENCE]),
            },
            input_example=model.examples()[:1],
            pip_requirements=_pip_requirements(),
            metadata={"proto2prod": metadata},
        )
    return run.info.run_id, info


def _set_alias_or_undo(registry: Registry, name: str, version: str, alias: str) -> None:
    try:
        registry.promote(name, version, alias)
    except Exception as exc:  # whatever failed, undo the version, then re-raise
        # Leave no version behind that the caller was told failed.
        with registry.errors(f"removing half-registered {name}/{version}"):
            registry.client.delete_model_version(name, version)
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError(f"setting alias '{alias}' failed: {exc}") from exc


def _named_signature(model: Model) -> Any:
    """Named columns in, and out for named outputs; every column typed `Any`, because the
    fields (images as strings or nested lists) check the values with their own messages."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    def columns(field: Any) -> Schema:
        if not isinstance(field, Record):
            return Schema([ColSpec(AnyType())])
        # a part with a default (a generation setting) is a column a caller may leave out
        return Schema(
            [ColSpec(AnyType(), key, required=part.default is None) for key, part in field.parts()]
        )

    return ModelSignature(inputs=columns(model.inputs), outputs=columns(model.outputs))


def _reference(model: Model, trained: Trained) -> dict[str, Any]:
    """The version's reference statistics (proto2prod/statistics.py): the held-out inputs
    `train()` returned, else the definition's examples."""
    from proto2prod.statistics import of_version

    held_out = trained.reference_inputs
    if held_out:
        return of_version(model, trained.weights, held_out, source="held-out")
    return of_version(model, trained.weights, model.examples(), source="examples")


def _register(registry: Registry, name: str, info: Any, run_id: str, tags: dict[str, str]) -> Any:
    """Create the version (and the registered model on first use) through the client:
    `mlflow.register_model` prints to stderr and polls; the client does neither."""
    client = registry.client
    try:
        client.get_registered_model(name)
    except mlflow_error() as exc:
        if getattr(exc, "error_code", "") not in NOT_FOUND_CODES:
            raise
        try:
            client.create_registered_model(name, description=f"proto2prod model '{name}'")
        except mlflow_error() as race:  # another first publish created it meanwhile: fine
            if getattr(race, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
    return client.create_model_version(
        name, source=info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id
    )


def experiment_for(registry: Registry, name: str) -> str:
    """One experiment per model; in the embedded store its artifacts live under the home."""
    experiment_name = f"proto2prod/{name}"
    client = registry.client
    with registry.errors(f"opening experiment {experiment_name}"):
        found = client.get_experiment_by_name(experiment_name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if registry.settings.embedded:
            location = (registry.settings.artifact_root / name).as_uri()
        try:
            return str(client.create_experiment(experiment_name, artifact_location=location))
        except mlflow_error():
            # Another first publish created it meanwhile (MLflow reports that as its SQL
            # store's integrity error): use theirs; if there is none, the error was other.
            found = client.get_experiment_by_name(experiment_name)
            if found is None:
                raise
            return str(found.experiment_id)
