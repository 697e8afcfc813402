"""The service's commands: serve (BentoML, following an alias) and build (a Bento)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from proto2prod.cli.output import console, open_registry, user_errors
from proto2prod.errors import InvalidArgument
from proto2prod.service_settings import ServiceSettings
from proto2prod.setting import help_of

if TYPE_CHECKING:
    from proto2prod.definition import Definition
    from proto2prod.registry import ModelRef, Registry


def _help(name: str) -> str:
    """An option's help from the setting's one declaration (default and bounds with it)."""
    return help_of(ServiceSettings, name)


def serve(
    model: Annotated[str, typer.Argument(help="What to serve: NAME@ALIAS, NAME/VERSION or NAME.")],
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    definition: Annotated[
        str | None, typer.Option(help=_help("definition"), envvar="PROTO2PROD_DEFINITION")
    ] = None,
    poll_s: Annotated[
        float | None, typer.Option(help=_help("poll_s"), envvar="PROTO2PROD_POLL_S")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help=_help("workers"), envvar="PROTO2PROD_WORKERS")
    ] = None,
    shadow: Annotated[
        str | None, typer.Option(help=_help("shadow"), envvar="PROTO2PROD_SHADOW")
    ] = None,
    shadow_rate: Annotated[
        float | None, typer.Option(help=_help("shadow_rate"), envvar="PROTO2PROD_SHADOW_RATE")
    ] = None,
    canary: Annotated[
        str | None, typer.Option(help=_help("canary"), envvar="PROTO2PROD_CANARY")
    ] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help=_help("no_auth"))] = False,
) -> None:
    """Serve a registered model over HTTP with BentoML; follows its alias live."""
    import os
    import sys

    with user_errors():
        from proto2prod.extras import check_installed
        from proto2prod.registry.reference import ModelRef

        ModelRef.parse(model)
        check_installed("bentoml")
        env = {**os.environ, "PROTO2PROD_MODEL": model}
        if definition:
            env["PROTO2PROD_DEFINITION"] = definition
        if poll_s is not None:
            env["PROTO2PROD_POLL_S"] = str(poll_s)
        if workers is not None:
            if workers < 1:
                raise InvalidArgument(f"--workers {workers}: give 1 or more worker processes")
            env["PROTO2PROD_WORKERS"] = str(workers)
        options = {"PROTO2PROD_SHADOW": shadow, "PROTO2PROD_CANARY": canary}
        env.update({k: v for k, v in options.items() if v})
        if shadow_rate is not None:
            env["PROTO2PROD_SHADOW_RATE"] = str(shadow_rate)
        if no_auth:
            env["PROTO2PROD_NO_AUTH"] = "1"
        _check_service_settings(env)
        _check_exposure(host, env, no_auth)
    # BentoML's CLI, with this service's own metrics folder (proto2prod/service/launch.py)
    args = [sys.executable, "-m", "proto2prod.service.launch", "serve"]
    args += ["proto2prod.service.app:ModelService"]
    args += ["--host", host, "--port", str(port)]
    console.print(f"serving {model} on http://{host}:{port} (API docs: http://{host}:{port}/)")
    sys.stdout.flush()
    os.execvpe(args[0], args, env)  # BentoML gets our signals (Ctrl-C, SIGTERM) directly


def _check_exposure(host: str, env: dict[str, str], no_auth: bool) -> None:
    """Beyond loopback, a service without API keys answers anyone: refuse unless told (the
    service checks this itself too, however it is started: service/exposure.py)."""
    from proto2prod.service.exposure import is_loopback
    from proto2prod.service.keys import KeyStore
    from proto2prod.settings import Settings

    if is_loopback(host) or no_auth:
        return
    settings = Settings.from_env(env)
    if not settings.keys_required and not KeyStore(settings.keys_file).records():
        raise InvalidArgument(
            f"--host {host} exposes the service, and {settings.keys_file} holds no API key: "
            f"create one (proto2prod keys create NAME), or pass --no-auth to serve it open"
        )


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
    ref = ModelRef.parse(config.model)
    definition = find_definition(config, registry, ref)
    if config.challenger:
        _check_challenger(registry, ModelRef(ref.name, config.challenger), definition)


def _check_challenger(registry: Registry, ref: ModelRef, definition: Definition) -> None:
    """The shadow's or canary's alias exists and its fields are the definition's; with the
    registry unreachable the service checks it when it can (and serves the champion)."""
    from proto2prod.errors import IncompatibleVersion, RegistryUnavailable

    try:
        info = registry.resolve(ref, with_metrics=False)
    except RegistryUnavailable:
        return
    if info.spec and info.spec != definition.model.spec():
        raise IncompatibleVersion(
            f"{ref} is version {info.version}, published with other fields than "
            f"{definition.entry}: a challenger must take and give what the champion does"
        )


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
    containerize: Annotated[
        bool, typer.Option(help="Also build its OCI image (BentoML's containerize).")
    ] = False,
    base_image: Annotated[
        str | None,
        typer.Option(help="The image's base, with Python 3.11 (default: BentoML's own)."),
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(help="docker or podman (default: Docker if its daemon answers, else podman)."),
    ] = None,
    build_opt: Annotated[
        list[str] | None,
        typer.Option(
            "--build-opt",
            help="KEY=VALUE for the image builder (repeatable): network=host, "
            "volume=HOST:CONTAINER:ro, build-arg=...",
        ),
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="The image's tag (default: the Bento's tag).")
    ] = None,
) -> None:
    """Build a Bento of the service for your definition, and with --containerize its image."""
    with user_errors():
        from proto2prod.registry.reference import ModelRef
        from proto2prod.service import container
        from proto2prod.service.bento import build_bento

        ref = ModelRef.parse(model)
        if definition is None:
            definition = _recorded_definition(ref)
        builder = container.pick_backend(backend) if containerize else None
        options = container.build_options(build_opt or ())
        built = build_bento(
            ref, definition, include=tuple(include or ()), version=version, base_image=base_image
        )
        console.print(f"built Bento [bold]{built.tag}[/]: {', '.join(built.files)}")
        if builder is not None:
            tag = container.containerize(built.tag, backend=builder, image=image, options=options)
            size = container.image_size(builder, tag) / 1e6
            console.print(f"built image [bold]{tag}[/] ({size:,.0f} MB) with {builder}")
            console.print(
                f"run it:  {builder} run -p 3000:3000 -e MLFLOW_TRACKING_URI=... "
                f"-e PROTO2PROD_HOME=/var/cache/proto2prod -v cache:/var/cache/proto2prod "
                f"(plus your API keys file: listening beyond loopback needs keys) {tag}",
                highlight=False,
            )
            return
    console.print(
        f"serve it:  bentoml serve {built.tag} --host 127.0.0.1  (with MLFLOW_TRACKING_URI or "
        f"PROTO2PROD_HOME pointing at the registry)\n"
        f"an image:  proto2prod build {ref} --containerize  (Docker or podman)",
        highlight=False,
    )


def _recorded_definition(ref: ModelRef) -> Path:
    """The definition file recorded with the version, if this machine has it."""
    entry = open_registry().resolve(ref, with_metrics=False).tags.get("proto2prod.entry", "")
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
