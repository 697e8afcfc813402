"""A throwaway PostgreSQL server on loopback for the production-form registry test.

Debian's `postgresql` package (`.ci/run` installs it). PostgreSQL refuses to run as root,
so as root the cluster belongs to the `postgres` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.processes import free_port, stop


def postgres_bin() -> Path | None:
    """The folder of `initdb` and `postgres`: Debian keeps them off PATH."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@contextmanager
def running_postgres(database: str = "mlflow") -> Iterator[str]:
    """Yield `postgresql://...` of a fresh cluster with `database` created; remove it after."""
    bin_dir = postgres_bin()
    assert bin_dir is not None, "PostgreSQL is not installed: apt-get install postgresql"
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    folder = Path(tempfile.mkdtemp(prefix="p2p-pg-"))
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "p2p"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = folder / "postgres.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *prefix,
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(folder),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                connection = psycopg.connect(
                    host="127.0.0.1", port=port, user="p2p", dbname="postgres", autocommit=True
                )
                break
            except psycopg.OperationalError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        with connection:
            connection.execute(f"CREATE DATABASE {database}")
        yield f"postgresql://p2p@127.0.0.1:{port}/{database}"
    finally:
        stop(proc)
        shutil.rmtree(folder, ignore_errors=True)
