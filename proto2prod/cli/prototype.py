"""The prototype command: a Gradio or Streamlit app, in-process or in front of the service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from proto2prod.cli.output import console, user_errors
from proto2prod.errors import InvalidArgument

if TYPE_CHECKING:
    from proto2prod.settings import PrototypeSettings


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
    mcp: Annotated[
        bool,
        typer.Option(
            "--mcp", help="Also serve the app's functions as MCP tools (Gradio's mcp_server)."
        ),
    ] = False,
) -> None:
    """Run a Gradio or Streamlit app for a model: in-process, or in front of the service."""
    with user_errors():
        from proto2prod.extras import check_installed
        from proto2prod.settings import PrototypeSettings

        credentials = _checked(ui, model_file, model, train, weights, backend, share, auth)
        if concurrency is not None and concurrency < 0:
            raise InvalidArgument(f"--concurrency {concurrency}: give 1 or more, or 0 for no limit")
        check_installed(ui)
        if mcp:
            if ui != "gradio":
                raise InvalidArgument("--mcp is Gradio's MCP server: use it with --ui gradio")
            check_installed("mcp")
        config = PrototypeSettings(
            definition=None if backend else model_file,
            model=model,
            weights=str(weights.absolute()) if weights else None,
            backend=backend,
        )
        if ui == "streamlit":
            _exec_streamlit(config, host, port or 8501)
        app_, title = _gradio_app(config, weights, concurrency, batch_size)
    from proto2prod.prototype import gradio_app

    url = gradio_app.launch(
        app_,
        host=host,
        port=port or 7860,
        share=share,
        auth=credentials,
        block=False,  # type: ignore[arg-type]
        mcp_server=mcp,
    )
    where = f"the service at {backend}" if backend else "the model in-process"
    console.print(f"{title}: {url} (answers from {where}); Ctrl-C stops it")
    if mcp:
        console.print(f"MCP (streamable HTTP): {url}/gradio_api/mcp/")
    try:
        app_.block_thread()
    except KeyboardInterrupt:
        app_.close()


def _checked(
    ui: str,
    model_file: str | None,
    model: str | None,
    train: bool,
    weights: Path | None,
    backend: str | None,
    share: bool,
    auth: str | None,
) -> tuple[str, str] | None:
    """The options that cannot go together, refused in one line each; the --auth pair."""
    if ui not in ("gradio", "streamlit"):
        raise InvalidArgument(f"--ui {ui!r}: choose gradio or streamlit")
    if backend is None and model_file is None:
        raise InvalidArgument("give a MODEL_FILE to run in-process, or --backend URL")
    if sum(map(bool, (model, train, weights))) > 1:
        raise InvalidArgument("--model, --weights and --train each say where weights come from")
    if share and ui == "gradio" and not auth:
        raise InvalidArgument("--share publishes the app on the internet: add --auth USER:PASSWORD")
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep:
        raise InvalidArgument("--auth must be USER:PASSWORD")
    return user, password


def _exec_streamlit(config: PrototypeSettings, host: str, port: int) -> NoReturn:
    """Streamlit runs the app as a script in its own process: the settings go by environment."""
    import os
    import sys

    args = [sys.executable, "-m", "streamlit", "run", _streamlit_script()]
    args += ["--server.address", host, "--server.port", str(port), "--server.headless", "true"]
    args += ["--browser.gatherUsageStats", "false", "--client.showErrorDetails", "false"]
    args += ["--server.maxUploadSize", "10"]
    os.execvpe(args[0], args, {**os.environ, **config.environ()})


def _gradio_app(
    config: PrototypeSettings,
    weights: Path | None,
    concurrency: int | None,
    batch_size: int | None,
) -> tuple[Any, str]:
    """The Gradio app (not launched yet) and its title."""
    from proto2prod.prototype import gradio_app
    from proto2prod.prototype.backends import InProcess, Remote, in_process, remote
    from proto2prod.settings import Settings

    runner: InProcess | Remote
    if config.backend:
        runner, spec = remote(config.backend)
    else:
        assert config.definition is not None
        runner, spec = in_process(
            config.definition, model_ref=config.model, weights=weights, settings=Settings.from_env()
        )
    app_ = gradio_app.build(spec, runner, concurrency=concurrency, batch_size=batch_size)
    return app_, spec.title


def _streamlit_script() -> str:
    from proto2prod import prototype

    return str(Path(prototype.__file__).with_name("streamlit_app.py"))
