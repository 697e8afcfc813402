"""The bench command: model-in-server against decoupled serving, or the GPU run card."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from proto2prod.benchmarks.plan import ARCHITECTURES, EXAMPLES, OPT_IN, SCENARIOS, Plan
from proto2prod.cli.output import JsonOption, console, err_console, print_json, user_errors
from proto2prod.processes import Stopped, stopped_by_signals

DEFAULT_SCENARIOS = ",".join(name for name in SCENARIOS if name not in OPT_IN)


def bench(
    models: Annotated[
        str, typer.Option(help=f"Comma-separated examples: {', '.join(EXAMPLES)}.")
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
        typer.Option(
            help=f"Beyond throughput: {', '.join(SCENARIOS)} (comma-separated, or none; "
            f"{', '.join(sorted(OPT_IN))} only when named)."
        ),
    ] = DEFAULT_SCENARIOS,
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
    as_json: JsonOption = False,
) -> None:
    """Model-in-server vs decoupled serving under load; writes a report that settles each claim."""
    import time as _time

    with user_errors():
        from proto2prod.benchmarks import gpu_card, report, runner
        from proto2prod.benchmarks.verdicts import verdicts
        from proto2prod.extras import check_installed

        check_installed("locust", "hdrh", "matplotlib", "gradio", "bentoml")
        plan = Plan.from_options(
            models=models,
            model=model,
            users=users,
            duration=duration,
            warmup=warmup,
            architectures=architectures,
            workers=workers,
            rate=rate,
            payload=payload,
            scenarios=scenarios,
            quick=quick,
            device=device,
        )
        card = (device or "").startswith("cuda")
        gpu = None
        if card:
            gpu = gpu_card.gpu_name(device or "cuda")  # no GPU: one line, before anything
            gpu_card.card_plan(plan)
        folder = out or Path("reports") / _time.strftime("%Y%m%d-%H%M%S")
    # the servers and load generators it starts stop however it is stopped (Ctrl-C, a kill)
    try:
        with stopped_by_signals(), _progress(plan.steps(), as_json) as say:
            if card:
                gpu_card.run(plan, folder, say, gpu=gpu)
                console.print(f"GPU run card: {folder / 'gpu.md'}")
                return
            results = runner.run(plan, folder, say)
    except Stopped as stop:
        raise typer.Exit(stop.exit_code) from None
    files = report.write(results, folder)
    if as_json:
        found = [dataclasses.asdict(v) | {"word": v.word} for v in verdicts(results)]
        print_json({"report": str(folder / "report.md"), "files": files, "verdicts": found})
        return
    console.print(f"report: {folder / 'report.md'} ({len(files)} files)")
    for verdict in verdicts(results):
        console.print(f"- {verdict.claim}: {verdict.numbers} -> [bold]{verdict.word}[/]")


@contextlib.contextmanager
def _progress(total: int, quiet_stdout: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar over `total` steps (on stderr with `--json`); yields `say(text)`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console if quiet_stdout else console) as progress:
        task = progress.add_task("benchmark", total=total)

        def say(text: str) -> None:
            progress.update(task, description=text, advance=1)
            progress.console.log(text)

        yield say
