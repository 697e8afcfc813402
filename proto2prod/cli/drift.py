"""`proto2prod drift NAME@ALIAS --url SERVICE`: is live traffic still like the reference?"""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from proto2prod.cli.output import JsonOption, console, print_json, user_errors
from proto2prod.errors import InvalidArgument


def drift(
    model: Annotated[str, typer.Argument(help="The reference the service serves: NAME@ALIAS.")],
    url: Annotated[str, typer.Option(help="The service, e.g. http://127.0.0.1:3000.")],
    as_json: JsonOption = False,
) -> None:
    """Per statistic: PSI (and KS p) of the service's live window against the version's
    reference, and a verdict: stable < 0.1 <= watch < 0.25 <= retrain."""

    from rich.table import Table

    with user_errors():
        from proto2prod.registry.reference import ModelRef

        ref = ModelRef.parse(model)
        from proto2prod.prototype.backends import Remote

        api_key = os.environ.get("PROTO2PROD_API_KEY") or None
        found = Remote(url, timeout=10, api_key=api_key).metadata()
        if found.get("name") != ref.name or (ref.alias and found.get("alias") != ref.alias):
            raise InvalidArgument(
                f"{url} serves {found.get('reference')}, not {ref}: give the service of {ref}"
            )
        report = _drift_report(url, found.get("drift"))
    if as_json:
        print_json(report)
        return
    if "statistics" not in report:
        console.print(f"no drift check yet: {report.get('note', 'the service has none')}")
        return
    table = Table(
        title=(
            f"{ref} v{report['version']}: the last {report['window']} live items against the "
            f"{report['reference']} reference ({report['reference_count']} items)"
        )
    )
    for column in ("statistic", "PSI", "KS p", "live", "verdict"):
        table.add_column(column)
    for name, s in report["statistics"].items():
        psi = "-" if s["psi"] is None else f"{s['psi']:.3f}"
        ks = "-" if s["ks_p"] is None else f"{s['ks_p']:.3g}"
        table.add_row(name, psi, ks, str(s["live"]), s["verdict"])
    console.print(table)


def _drift_report(url: str, found: object) -> dict[str, Any]:
    """The service's drift report, checked for the shape this command reads."""
    from proto2prod.errors import NotAService

    if found is None:
        return {}
    statistics = found.get("statistics") if isinstance(found, dict) else None
    rows_ok = isinstance(statistics, dict) and all(
        isinstance(row, dict) and {"psi", "ks_p", "live", "verdict"} <= set(row)
        for row in statistics.values()
    )
    if (
        not isinstance(found, dict)
        or (statistics is not None and not rows_ok)
        or (
            statistics is not None
            and not {"version", "window", "reference", "reference_count"} <= set(found)
        )
    ):
        raise NotAService(
            f"{url}/metadata has a drift report this command cannot read; is it a proto2prod "
            f"service of this version?"
        )
    return found
