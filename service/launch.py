"""`python -m proto2prod.service.launch serve ...`: BentoML's CLI, with a metrics folder of
this service's own.

BentoML keeps Prometheus' multiprocess files in one folder per user (under BENTOML_HOME) and
wipes it whenever a server starts: two services on one host would report each other's
counters, and the second start would erase the first's. `proto2prod serve` runs BentoML
through this launcher, which points that folder at `<temp dir>/proto2prod-metrics/<pid>`
(BentoML hands it to its workers) and removes the folders of services that are gone. Not
under PROTO2PROD_HOME: these are scratch files, and a full data disk must not stop the
workers from starting (tested with a full disk).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path


def metrics_folder(root: Path, pid: int) -> Path:
    """`root/<pid>`, after removing the folders of processes no longer running."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and int(folder.name) != pid and not alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    return root / str(pid)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str] | None = None) -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer

    folder = metrics_folder(Path(tempfile.gettempdir()) / "proto2prod-metrics", os.getpid())
    BentoMLContainer.prometheus_multiproc_dir.set(str(folder))
    from bentoml_cli.cli import cli

    cli(args=argv if argv is not None else sys.argv[1:], prog_name="bentoml")


if __name__ == "__main__":
    main()
