"""A Debian bookworm base image for the container test, made here without Docker Hub:
debootstrap from Debian's registry, then `podman import`. Python 3.11, pip, venv and what
BentoML's Dockerfile installs on a custom base (so its apt step has nothing to fetch), and
uv (its installer, which it would otherwise fetch with pip).

Also the podman settings this kernel needs (runc, not crun, which refuses its hybrid
cgroups; no default ulimits or pids limit), written once to /etc/containers/containers.conf.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

IMAGE = "localhost/proto2prod-test-base:bookworm"
PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,gnupg2,bash,build-essential,git"
CONTAINERS_CONF = """[containers]
default_ulimits = []
pids_limit = 0

[engine]
runtime = "runc"
"""


def configure_podman(conf: Path = Path("/etc/containers/containers.conf")) -> None:
    if not conf.exists() or "runc" not in conf.read_text():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(CONTAINERS_CONF)


def exists(image: str = IMAGE) -> bool:
    return subprocess.run(["podman", "image", "exists", image]).returncode == 0


def uv_binary() -> Path:
    """The uv the tests run with (a dev dependency's binary), or one from pip."""
    found = shutil.which("uv")
    if found:
        return Path(found)
    folder = Path(tempfile.mkdtemp(prefix="uv-"))
    subprocess.run(
        ["pip", "install", "-q", "--target", str(folder), "uv>=0.13.4"], check=True, timeout=300
    )
    return folder / "bin" / "uv"


def make(image: str = IMAGE) -> str:
    """The base image (made once: ~2-3 minutes, most of it Debian's packages)."""
    configure_podman()
    if exists(image):
        return image
    with tempfile.TemporaryDirectory(prefix="bookworm-") as root:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={PACKAGES}",
                "bookworm",
                root,
                "http://deb.debian.org/debian",
            ],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        shutil.copy2(uv_binary(), Path(root, "usr/local/bin/uv"))
        shutil.rmtree(Path(root, "var/cache/apt/archives"), ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["podman", "import", "--change", 'CMD ["/bin/bash"]', "-", image],
            stdin=tar.stdout,
            check=True,
            capture_output=True,
            timeout=600,
        )
        tar.wait()
    return image


if __name__ == "__main__":
    print(make())
