"""Build a release bundle from a checkout, one file per architecture (the format: ``manifest.py``).

    python -m firmware.update.build [--source DIR] [--arch ARCH] [--wheelhouse DIR]
                                    [--python-version X.Y] [--output DIR] [--sign KEY [--password-file FILE]]

For this machine's architecture, pip builds this checkout's wheel and every dependency as a wheel
(``pip wheel``), from PyPI or, with ``--wheelhouse DIR``, from that folder only. For another
architecture (an aarch64 bundle for the Pi, built on x86-64), the dependencies cannot be built
here: ``--wheelhouse DIR`` must hold them, made on a machine of that architecture with
``pip wheel . -w DIR`` (images/README.md, "Updating boxes"); this checkout's own wheel is pure
Python and is built here. Every wheel must fit the boxes: the architecture, the Python minor
version, and a glibc no newer than the box's (``BOX_GLIBC``); a wheel that does not is named
and the build stops.

The bundle is ``OUTPUT/edge-recorder-VERSION-ARCH.tar``; with ``--sign KEY`` (a minisign secret
key) also its signature beside it, the same as ``minisign -Sm BUNDLE -s KEY`` makes. Nothing is
written into the checkout.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from packaging import tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from . import signing
from .manifest import EXECUTABLE, INSTALLER, MANIFEST, MENDER_MODULE, NAME, FileEntry, Manifest

#: Debian 12 and Raspberry Pi OS Bookworm, the systems the box runs: a wheel may need this glibc at most.
BOX_GLIBC = (2, 36)
#: The oldest catalog schema a build migrates: catalog.MIGRATIONS keeps every script from the first.
CATALOG_READS_FROM = 0
SOURCE_PARTS = ("pyproject.toml", "README.md", "firmware", "hal")


class BuildError(Exception):
    """A bundle that cannot be built; the message says why."""


def build(
    source: Path,
    output: Path,
    *,
    architecture: str | None = None,
    wheelhouse: Path | None = None,
    python: str | None = None,
) -> Path:
    """Build the bundle for ``architecture`` (default: this machine's) from the checkout ``source``."""
    source = Path(source).resolve()
    architecture = architecture or platform.machine()
    python = python or f"{sys.version_info[0]}.{sys.version_info[1]}"
    native = architecture == platform.machine()
    for part in (*SOURCE_PARTS, "systemd", INSTALLER):
        if not (source / part).exists():
            raise BuildError(f"{source} has no {part}: give a checkout of edge-recorder (--source DIR)")
    if wheelhouse is not None and not wheelhouse.is_dir():
        raise BuildError(f"no such wheelhouse: {wheelhouse}")
    if not native and wheelhouse is None:
        raise BuildError(
            f"an {architecture} bundle needs --wheelhouse DIR with its wheels, made on an {architecture} machine "
            "(images/README.md, Updating boxes)"
        )
    with tempfile.TemporaryDirectory(prefix="edge-recorder-bundle-") as work_dir:
        work = Path(work_dir)
        copy = work / "source"
        copy.mkdir()
        for part in SOURCE_PARTS:  # a copy: setuptools writes build/ and *.egg-info where it builds
            if (source / part).is_dir():
                shutil.copytree(source / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source / part, copy / part)
        version, schema = _version_and_schema(copy)
        wheels = work / "wheels"
        _wheels(copy, wheels, native=native, wheelhouse=wheelhouse)
        files = _check_wheels(wheels, version, architecture, python)
        files[INSTALLER] = source / INSTALLER
        if (source / MENDER_MODULE).is_file():
            files[MENDER_MODULE] = source / MENDER_MODULE
        for unit in sorted((source / "systemd").iterdir()):
            if unit.is_file():
                files[f"systemd/{unit.name}"] = unit
        manifest = Manifest(
            version=version,
            architecture=architecture,
            python=python,
            catalog_schema=schema,
            catalog_reads_from=CATALOG_READS_FROM,
            files={name: _entry(path) for name, path in files.items()},
        )
        output.mkdir(parents=True, exist_ok=True)
        return _write(output / manifest.bundle_name, manifest, files)


def _version_and_schema(source: Path) -> tuple[str, int]:
    """The version and catalog schema of the code being bundled (not of the code that builds)."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import firmware, firmware.catalog; "
        "print(firmware.__version__, len(firmware.catalog.MIGRATIONS))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(source)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"cannot read the version of {source}: {result.stderr.strip().splitlines()[-1:]}")
    version, schema = result.stdout.split()
    return version, int(schema)


def _wheels(source: Path, wheels: Path, *, native: bool, wheelhouse: Path | None) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "wheel", "--quiet"]
    index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    # Natively pip resolves and builds every dependency; otherwise only this checkout's pure wheel.
    command = [*pip, *index, "--wheel-dir", str(wheels), str(source)]
    if not native:
        command.insert(len(pip), "--no-deps")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"pip wheel failed: {_last_line(result.stderr)}")
    if not native:
        assert wheelhouse is not None
        for wheel in sorted(wheelhouse.glob("*.whl")):
            if _wheel_name(wheel) != NAME:  # this checkout's own wheel is the one just built
                shutil.copy2(wheel, wheels / wheel.name)


def _check_wheels(wheels: Path, version: str, architecture: str, python: str) -> dict[str, Path]:
    fits = box_tags(architecture, python)
    files = {}
    own = []
    for wheel in sorted(wheels.glob("*.whl")):
        name = _wheel_name(wheel)
        _, wheel_version, _, wheel_tags = parse_wheel_filename(wheel.name)
        if not wheel_tags & fits:
            raise BuildError(f"{wheel.name} is not for {architecture} and Python {python} on the box")
        if name == NAME:
            own.append(str(wheel_version))
        files[f"wheels/{wheel.name}"] = wheel
    if own != [version]:
        raise BuildError(
            f"the checkout says version {version}, its wheel {own}: pyproject.toml and firmware/__init__.py disagree"
        )
    return files


def box_tags(architecture: str, python: str) -> frozenset[tags.Tag]:
    """The wheel tags a box of ``architecture`` with CPython ``python`` (X.Y) installs.

    >>> tags.Tag("cp311", "cp311", "manylinux_2_17_aarch64") in box_tags("aarch64", "3.11")
    True
    >>> tags.Tag("cp311", "cp311", "manylinux_2_39_aarch64") in box_tags("aarch64", "3.11")
    False
    """
    major, minor = (int(part) for part in python.split("."))
    glibc_major, glibc_minor = BOX_GLIBC
    platforms = [f"manylinux_{glibc_major}_{m}_{architecture}" for m in range(glibc_minor, 4, -1)]
    platforms += [f"{legacy}_{architecture}" for legacy in ("manylinux2014", "manylinux2010", "manylinux1")]
    platforms.append(f"linux_{architecture}")
    found = set(tags.cpython_tags((major, minor), abis=[f"cp{major}{minor}"], platforms=platforms))
    found |= set(tags.compatible_tags((major, minor), f"cp{major}{minor}", platforms))
    return frozenset(found)


def _write(path: Path, manifest: Manifest, files: dict[str, Path]) -> Path:
    """The tar: manifest.json first, then the files in name order, all owned by root."""
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        data = manifest.to_json()
        tar.addfile(_member(MANIFEST, len(data), 0o644, mtime), io.BytesIO(data))
        for name in sorted(files):
            with files[name].open("rb") as f:
                mode = 0o755 if name in EXECUTABLE else 0o644
                tar.addfile(_member(name, files[name].stat().st_size, mode, mtime), f)
    os.replace(partial, path)
    return path


def _member(name: str, size: int, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _entry(path: Path) -> FileEntry:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            digest.update(chunk)
    return FileEntry(digest.hexdigest(), path.stat().st_size)


def _wheel_name(wheel: Path) -> str:
    try:
        return str(parse_wheel_filename(wheel.name)[0])
    except InvalidWheelFilename:
        raise BuildError(f"{wheel} is not a wheel") from None


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("WARNING:")]
    return lines[-1].strip() if lines else "(no message)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware.update.build", description="Build a release bundle of edge-recorder."
    )
    parser.add_argument("--source", type=Path, default=Path("."), help="the checkout (default: .)")
    parser.add_argument("--arch", help="the boxes' architecture, e.g. aarch64 (default: this machine's)")
    parser.add_argument("--wheelhouse", type=Path, help="take every dependency from this folder of wheels")
    parser.add_argument("--python-version", help="the boxes' Python, X.Y (default: this one's)")
    parser.add_argument("--output", type=Path, default=Path("dist"), help="where the bundle goes (default: dist)")
    parser.add_argument("--sign", type=Path, metavar="KEY", help="sign it with this minisign secret key")
    parser.add_argument("--password-file", type=Path, help="the secret key's password, if it has one")
    args = parser.parse_args(argv)
    try:
        bundle = build(
            args.source, args.output, architecture=args.arch, wheelhouse=args.wheelhouse, python=args.python_version
        )
        print(bundle)
        if args.sign:
            password = None
            if args.password_file:
                password = args.password_file.read_text().splitlines()[0]
            elif sys.stdin.isatty():
                password = getpass.getpass(f"password of {args.sign} (empty if none): ") or None
            print(signing.sign(bundle, args.sign, password=password))
    except (BuildError, signing.SignatureError, OSError) as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
