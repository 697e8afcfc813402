"""`proto2prod deploy kubernetes`: manifests for the service's image (service/kubernetes.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from proto2prod.cli.output import JsonOption, print_json, user_errors

deploy = typer.Typer(
    name="deploy",
    help="Manifests that run the service's image past one machine.",
    no_args_is_help=True,
)


@deploy.command("kubernetes")
def kubernetes(
    model: Annotated[str, typer.Argument(help="What the fleet serves: NAME@ALIAS.")],
    image: Annotated[
        str,
        typer.Option(help="The service's image (proto2prod build REF --containerize), pushed."),
    ],
    out: Annotated[Path, typer.Option(help="The folder to write the manifests to.")],
    replicas: Annotated[int, typer.Option(help="Replicas (the autoscaler's floor).")] = 2,
    max_replicas: Annotated[
        int, typer.Option(help="The autoscaler's ceiling (default: twice --replicas).")
    ] = 0,
    gpu: Annotated[bool, typer.Option(help="One nvidia.com/gpu per replica.")] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="The tracking server the pods reach (default: MLFLOW_TRACKING_URI)."),
    ] = None,
    cpu: Annotated[str, typer.Option(help="CPU requested per replica.")] = "1",
    memory: Annotated[str, typer.Option(help="Memory requested (and its limit).")] = "2Gi",
    as_json: JsonOption = False,
) -> None:
    """Write a Deployment, Service, headless peers Service, autoscaler, disruption budget
    and ConfigMap (then `kubectl apply -k OUT`, after creating the two Secrets)."""
    with user_errors():
        from proto2prod.errors import InvalidArgument
        from proto2prod.registry.reference import ModelRef
        from proto2prod.service.kubernetes import Deployment, write

        ref = ModelRef.parse(model)
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise InvalidArgument(
                "give --tracking-uri http://HOST:PORT (or set MLFLOW_TRACKING_URI): the pods "
                "pull the model from a tracking server they can reach"
            )
        spec = Deployment(str(ref), image, uri, replicas, max_replicas, gpu, cpu=cpu, memory=memory)
        written = write(spec, out)
    if as_json:
        print_json({"name": spec.name, "files": [str(p) for p in written]})
        return
    typer.echo(f"wrote {', '.join(p.name for p in written)} to {out}")
    typer.echo(
        f"then:\n"
        f"  kubectl create secret generic {spec.name}-keys --from-file=keys.json=KEYS_FILE\n"
        f"  kubectl create secret generic {spec.name}-secrets "
        f"--from-literal=PROTO2PROD_WEBHOOK_SECRET=... --from-literal=PROTO2PROD_ADMIN_TOKEN=...\n"
        f"  kubectl apply -k {out}"
    )
