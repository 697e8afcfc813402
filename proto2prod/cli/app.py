"""`proto2prod`: train, list, promote and roll back model versions.

Every command reads its settings from the environment (`PROTO2PROD_HOME`,
`MLFLOW_TRACKING_URI`) through `Settings`; bad input prints one line and exits 2.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proto2prod.benchmarks.plan import ARCHITECTURES, SCENARIOS, Plan
from proto2prod.cli.demo import demo
from proto2prod.cli.output import BarProgress, console, user_errors
from proto2prod.errors import InvalidArgument

if TYPE_CHECKING:
    from proto2prod.definition import Definition
    from proto2prod.model import Trained
    from proto2prod.registry import ModelRef, Published

app = typer.Typer(
    name="proto2prod",
    help="From a Gradio prototype to a registry-fed model service, from one model definition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(demo)


@app.callback()
def _this_process() -> None:
    """The CLI's process is ours: apply the registry settings to MLflow once, before any
    command (the library itself never writes the environment)."""
    from proto2prod.settings import Settings
    from proto2prod.startup import configure_process

    with user_errors():
        configure_process(Settings.from_env())


AliasOption = Annotated[
    str, typer.Option("--alias", "-a", help="Alias to move (e.g. production, staging).")
]


def _registry():  # type: ignore[no-untyped-def]
    from proto2prod.registry import Registry
    from proto2prod.settings import Settings

    return Registry(Settings.from_env())


@app.command()
def train(
    model_file: Annotated[
        str,
        typer.Argument(help="A model definition: FILE.py, FILE.py:Class or module:Class."),
    ],
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="Point this alias at the new version.")
    ] = None,
    quick: Annotated[bool, typer.Option(help="A short training run (for smoke tests).")] = False,
) -> None:
    """Train a model definition, publish it to the registry and register a new version."""
    with user_errors():
        from proto2prod.definition import load_definition
        from proto2prod.errors import DefinitionError
        from proto2prod.registry import check_alias, publish

        if alias is not None:
            check_alias(alias)
        registry = _registry()
        definition = load_definition(model_file)
        if not definition.model.has_train:
            raise DefinitionError(
                f"{definition.entry} has no train(); register weights trained elsewhere "
                f"with: proto2prod register {model_file} --weights PATH"
            )
        with BarProgress() as progress:
            trained = _train(definition, progress, quick)
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in trained.metrics.items())
        console.print(f"trained [bold]{definition.model.name}[/]: {metrics}")
        published = publish(
            registry, definition, trained, alias=alias, source_path=Path(model_file.split(":")[0])
        )
    _say_registered(published)


@app.command()
def register(
    model_file: Annotated[
        str,
        typer.Argument(help="The model definition: FILE.py, FILE.py:Class or module:Class."),
    ],
    weights: Annotated[
        Path,
        typer.Option(
            "--weights",
            "-w",
            help="Weights trained elsewhere: .safetensors, or a PyTorch state dict "
            "(.pt, .pth, .bin; read with weights_only=True and converted).",
        ),
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option("--metric", "-m", help="NAME=NUMBER, a held-out metric (repeatable)."),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="NAME=VALUE, a training parameter (repeatable)."),
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="Point this alias at the new version.")
    ] = None,
) -> None:
    """Register weights trained elsewhere (a notebook, a cluster, a checkpoint) as a version.

    Nothing is written to the registry until the weights load strictly into network() and
    every example gives an output that fits the definition's fields.
    """
    with user_errors():
        from proto2prod.definition import load_definition
        from proto2prod.model import Trained
        from proto2prod.registry import check_alias, publish
        from proto2prod.registry.publish import sha256_file
        from proto2prod.weights import read_weights

        if alias is not None:
            check_alias(alias)
        metrics = {
            key: _number("--metric", key, value) for key, value in _pairs("--metric", metric)
        }
        params = dict(_pairs("--param", param))
        definition = load_definition(model_file)
        state = read_weights(weights)
        origin = {"by": "register", "file": weights.name, "sha256": sha256_file(weights)}
        published = publish(
            _registry(),
            definition,
            Trained(weights=state, metrics=metrics, params=params),
            alias=alias,
            source_path=Path(model_file.split(":")[0]),
            origin=origin,
        )
    _say_registered(published)


def _train(definition: Definition, progress: BarProgress, quick: bool) -> Trained:
    """The user's `train()`, whose failures are theirs to fix: one line naming it."""
    from proto2prod.errors import DefinitionError
    from proto2prod.model import Trained

    try:
        trained = definition.model.train(progress, quick=quick)
    except Exception as exc:
        raise DefinitionError(f"train() raised {type(exc).__name__}: {exc}",
                              where=definition.entry) from exc  # fmt: skip
    if not isinstance(trained, Trained):
        raise DefinitionError(
            f"train() must return proto2prod.Trained(weights=..., metrics=...); it returned "
            f"{type(trained).__name__}",
            where=definition.entry,
        )
    return trained


def _pairs(option: str, given: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for text in given or []:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(
                f"{option} {text!r}: write NAME=VALUE, e.g. {option} accuracy=0.97"
            )
        pairs.append((key.strip(), value.strip()))
    return pairs


def _number(option: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidArgument(f"{option} {key}={value!r}: the value must be a finite number")
    return number


def _say_registered(published: Published) -> None:
    tail = f" with alias [bold]@{published.alias}[/]" if published.alias else ""
    console.print(
        f"registered [bold]{published.name}[/] version [bold]{published.version}[/]{tail}: "
        f"{published.uri}"
    )


@app.command()
def versions(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. digits.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the versions of a model with their aliases and metrics, newest first."""
    with user_errors():
        found = _registry().versions(name)
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in found], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{name} ({len(found)} versions)")
    for column in ("version", "aliases", "metrics", "created", "run id"):
        table.add_column(column)
    for v in found:
        created = datetime.fromtimestamp(v.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            v.version,
            ", ".join(f"@{a}" for a in v.aliases),
            ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())),
            created,
            v.run_id[:12],
        )
    console.print(table)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(help="Version number to point the alias at.")],
    alias: AliasOption = "production",
) -> None:
    """Point an alias at a version (services following the alias pick it up)."""
    with user_errors():
        previous = _registry().promote(name, version, alias)
    before = f" (was version {previous})" if previous and previous != str(version) else ""
    console.print(f"{name}@{alias} -> version {version}{before}")


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: AliasOption = "production",
) -> None:
    """Move an alias back to the version it pointed at before the last promote."""
    with user_errors():
        current, previous = _registry().rollback(name, alias)
    console.print(f"{name}@{alias} -> version {previous} (rolled back from {current})")


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="What to serve: NAME@ALIAS, NAME/VERSION or NAME.")],
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    definition: Annotated[
        str | None,
        typer.Option(
            help="The installed model definition to run (FILE.py[:Class] or module:Class); "
            "default: the entry point recorded when the version was published.",
            envvar="PROTO2PROD_DEFINITION",
        ),
    ] = None,
    poll_s: Annotated[
        float | None, typer.Option(help="Seconds between alias checks.", envvar="PROTO2PROD_POLL_S")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes, each with the model and its own batcher; with several "
            "GPUs, one GPU each.",
            envvar="PROTO2PROD_WORKERS",
        ),
    ] = None,
) -> None:
    """Serve a registered model over HTTP with BentoML; follows its alias live."""
    import importlib.util
    import os
    import sys

    with user_errors():
        from proto2prod.errors import MissingExtra
        from proto2prod.registry.reference import ModelRef

        ModelRef.parse(model)
        if importlib.util.find_spec("bentoml") is None:
            raise MissingExtra("bentoml", "serve")
        env = {**os.environ, "PROTO2PROD_MODEL": model}
        if definition:
            env["PROTO2PROD_DEFINITION"] = definition
        if poll_s is not None:
            env["PROTO2PROD_POLL_S"] = str(poll_s)
        if workers is not None:
            if workers < 1:
                raise InvalidArgument(f"--workers {workers}: give 1 or more worker processes")
            env["PROTO2PROD_WORKERS"] = str(workers)
        _check_service_settings(env)
    # BentoML's CLI, with this service's own metrics folder (proto2prod/service/launch.py)
    args = [sys.executable, "-m", "proto2prod.service.launch", "serve"]
    args += ["proto2prod.service.app:ModelService"]
    args += ["--host", host, "--port", str(port)]
    console.print(f"serving {model} on http://{host}:{port} (docs: http://{host}:{port}/docs)")
    sys.stdout.flush()
    os.execvpe(args[0], args, env)  # BentoML gets our signals (Ctrl-C, SIGTERM) directly


def _check_service_settings(env: dict[str, str]) -> None:
    """Fail here, in one line, rather than in a BentoML worker that its arbiter respawns:
    the settings, the GPU when one is required, and the definition that will serve."""
    import os
    import sys

    from proto2prod.errors import DeviceUnavailable, gpu_required_message
    from proto2prod.registry import ModelRef, Registry
    from proto2prod.service.runtime import find_definition
    from proto2prod.settings import ServiceSettings, Settings

    config = ServiceSettings.from_env(env)
    if config.require_gpu:
        import torch

        if not torch.cuda.is_available():
            raise DeviceUnavailable(gpu_required_message())
    registry = Registry(Settings.from_env(env))
    if os.getcwd() not in sys.path:  # `bentoml serve` imports from its working directory too
        sys.path.insert(0, os.getcwd())
    find_definition(config, registry, ModelRef.parse(config.model))


@app.command()
def build(
    model: Annotated[
        str, typer.Argument(help="What the Bento serves: NAME@ALIAS or NAME/VERSION.")
    ],
    definition: Annotated[
        Path | None,
        typer.Option(
            help="The model definition file; default: the one recorded with the version, "
            "when it is on this machine."
        ),
    ] = None,
    include: Annotated[
        list[str] | None,
        typer.Option(
            "--include",
            help="More files for the Bento, relative to the definition's folder (glob "
            "patterns, repeatable): the local modules the definition imports.",
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="The Bento's version (default: BentoML generates one).")
    ] = None,
) -> None:
    """Build a Bento of the service for your definition (then `bentoml containerize`)."""
    with user_errors():
        from proto2prod.registry.reference import ModelRef
        from proto2prod.service.bento import build_bento

        ref = ModelRef.parse(model)
        if definition is None:
            definition = _recorded_definition(ref)
        built = build_bento(ref, definition, include=tuple(include or ()), version=version)
    console.print(f"built Bento [bold]{built.tag}[/]: {', '.join(built.files)}")
    console.print(
        f"serve it:  bentoml serve {built.tag}  (with MLFLOW_TRACKING_URI or PROTO2PROD_HOME "
        f"pointing at the registry)\nan image:  bentoml containerize {built.tag}  (needs Docker)",
        highlight=False,
    )


def _recorded_definition(ref: ModelRef) -> Path:
    """The definition file recorded with the version, if this machine has it."""
    entry = _registry().resolve(ref, with_metrics=False).tags.get("proto2prod.entry", "")
    target = entry.rpartition(":")[0]
    if target.endswith(".py"):
        path: Path | None = Path(target)
    else:
        spec = importlib.util.find_spec(target) if target else None
        path = Path(spec.origin) if spec and spec.origin else None
    if path is None or not path.is_file():
        raise InvalidArgument(
            f"{ref} was published from {entry or 'an unknown definition'}, which is not on "
            f"this machine; pass --definition FILE.py"
        )
    return path


@app.command()
def prototype(
    model_file: Annotated[
        str | None,
        typer.Argument(help="The model definition (FILE.py[:Class]); not needed with --backend."),
    ] = None,
    ui: Annotated[str, typer.Option(help="gradio or streamlit.")] = "gradio",
    model: Annotated[
        str | None, typer.Option(help="Weights from the registry, e.g. digits@staging.")
    ] = None,
    train: Annotated[
        bool, typer.Option(help="Train now for the weights (the default without --model).")
    ] = False,
    weights: Annotated[
        Path | None,
        typer.Option(help="Weights trained elsewhere (.safetensors, .pt, .pth, .bin)."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="Call the service at this URL instead of running the model here."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it.")] = "127.0.0.1",
    port: Annotated[
        int | None, typer.Option(help="Port (default: Gradio 7860, Streamlit 8501).")
    ] = None,
    share: Annotated[
        bool, typer.Option(help="Gradio share link (needs internet and --auth).")
    ] = False,
    auth: Annotated[
        str | None, typer.Option(help="USER:PASSWORD required to open the Gradio app.")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(help="Gradio queue concurrency_limit; 0: no limit (see README)."),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Gradio max_batch_size.")] = None,
) -> None:
    """Run a Gradio or Streamlit app for a model: in-process, or in front of the service."""
    import os
    import sys

    with user_errors():
        from proto2prod.errors import MissingExtra
        from proto2prod.settings import PrototypeSettings

        if ui not in ("gradio", "streamlit"):
            raise InvalidArgument(f"--ui {ui!r}: choose gradio or streamlit")
        if concurrency is not None and concurrency < 0:
            raise InvalidArgument(f"--concurrency {concurrency}: give 1 or more, or 0 for no limit")
        if backend is None and model_file is None:
            raise InvalidArgument("give a MODEL_FILE to run in-process, or --backend URL")
        if sum(map(bool, (model, train, weights))) > 1:
            raise InvalidArgument("--model, --weights and --train each say where weights come from")
        if share and ui == "gradio" and not auth:
            raise InvalidArgument(
                "--share publishes the app on the internet: add --auth USER:PASSWORD"
            )
        credentials = tuple(auth.split(":", 1)) if auth else None
        if credentials is not None and len(credentials) != 2:
            raise InvalidArgument("--auth must be USER:PASSWORD")
        if importlib.util.find_spec(ui) is None:
            raise MissingExtra(ui, "ui")
        config = PrototypeSettings(
            definition=None if backend else model_file,
            model=model,
            weights=str(weights.absolute()) if weights else None,
            backend=backend,
        )
        if ui == "streamlit":
            args = [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                _streamlit_script(),
                "--server.address",
                host,
                "--server.port",
                str(port or 8501),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                "--client.showErrorDetails",
                "false",
                "--server.maxUploadSize",
                "10",
            ]
            os.execvpe(args[0], args, {**os.environ, **config.environ()})
        from proto2prod.prototype import gradio_app
        from proto2prod.prototype.backends import in_process, remote

        if backend:
            runner, spec = remote(backend)
        else:
            assert model_file is not None
            runner, spec = in_process(model_file, model_ref=model, weights=weights)
        app_ = gradio_app.build(spec, runner, concurrency=concurrency, batch_size=batch_size)
    url = gradio_app.launch(
        app_,
        host=host,
        port=port or 7860,
        share=share,
        auth=credentials,
        block=False,  # type: ignore[arg-type]
    )
    where = f"the service at {backend}" if backend else "the model in-process"
    console.print(f"{spec.title}: {url} (answers from {where}); Ctrl-C stops it")
    try:
        app_.block_thread()
    except KeyboardInterrupt:
        app_.close()


@app.command()
def bench(
    models: Annotated[
        str, typer.Option(help="Comma-separated examples: digits, heavy, wine.")
    ] = "heavy,digits",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Benchmark a version from your registry instead (e.g. digits@production); "
            "it is copied, your aliases are never moved.",
        ),
    ] = None,
    users: Annotated[
        str, typer.Option(help="Comma-separated concurrent users per point.")
    ] = "1,8,32",
    duration: Annotated[float, typer.Option(help="Measured seconds per point.")] = 20.0,
    warmup: Annotated[float, typer.Option(help="Seconds of load before measuring.")] = 3.0,
    architectures: Annotated[
        str, typer.Option(help=f"Comma-separated: {', '.join(ARCHITECTURES)}.")
    ] = ",".join(ARCHITECTURES),
    workers: Annotated[
        int, typer.Option(help="Locust workers (master/worker); 0: one process.")
    ] = 0,
    rate: Annotated[
        float, typer.Option(help="Open loop: requests/s scheduled; 0: closed loop.")
    ] = 0.0,
    payload: Annotated[str, typer.Option(help="png (base64, as browsers upload) or json.")] = "png",
    scenarios: Annotated[
        str,
        typer.Option(help=f"Beyond throughput: {', '.join(SCENARIOS)} (comma-separated, or none)."),
    ] = ",".join(SCENARIOS),
    quick: Annotated[
        bool, typer.Option(help="Seconds per point, users 1 and 8 (smoke test).")
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(
            help="cuda (or cuda:N): the GPU run card instead (service vs limit, batch 1 vs "
            "batched, float32 vs float16), written as gpu.md; cpu: pin every server to the CPU."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default reports/<time>).")
    ] = None,
) -> None:
    """Model-in-server vs decoupled serving under load; writes a report that settles each claim."""
    import time as _time

    with user_errors():
        from proto2prod.benchmarks import gpu_card, report, runner
        from proto2prod.benchmarks.verdicts import verdicts
        from proto2prod.extras import check_installed

        check_installed("locust", "hdrh", "matplotlib", "gradio", "bentoml")
        plan = Plan.from_options(
            models=models, model=model, users=users, duration=duration, warmup=warmup,
            architectures=architectures, workers=workers, rate=rate, payload=payload,
            scenarios=scenarios, quick=quick, device=device,
        )  # fmt: skip
        card = (device or "").startswith("cuda")
        if card:
            gpu_card.gpu_name(device or "cuda")  # no GPU: one line, before anything starts
            gpu_card.card_plan(plan)
        folder = out or Path("reports") / _time.strftime("%Y%m%d-%H%M%S")
    with _progress(plan.steps()) as say:
        if card:
            gpu_card.run(plan, folder, say)
            console.print(f"GPU run card: {folder / 'gpu.md'}")
            return
        results = runner.run(plan, folder, say)
    files = report.write(results, folder)
    console.print(f"report: {folder / 'report.md'} ({len(files)} files)")
    for verdict in verdicts(results):
        console.print(f"- {verdict.claim}: {verdict.numbers} -> [bold]{verdict.word}[/]")


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar over `total` steps; yields `say(text)`, one step each."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("benchmark", total=total)

        def say(text: str) -> None:
            progress.update(task, description=text, advance=1)
            progress.console.log(text)

        yield say


def _streamlit_script() -> str:
    from proto2prod import prototype

    return str(Path(prototype.__file__).with_name("streamlit_app.py"))


def main() -> None:
    app()
