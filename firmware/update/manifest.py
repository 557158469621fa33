"""The release bundle's format: what is in it, and the manifest that says so.

A bundle is an uncompressed tar file, ``edge-recorder-VERSION-ARCH.tar`` (the wheels in it are
compressed already), with its minisign signature beside it, ``edge-recorder-VERSION-ARCH.tar.minisig``:

    manifest.json          first, so a reader meets it before the files it lists
    wheels/*.whl           edge-recorder and every dependency, built for ARCH and Python PYTHON
    systemd/*              the units and the sysusers.d/tmpfiles.d entries, as install.sh installs them
    images/install.sh      the installer that makes the new slot and switches to it
    images/mender/edge-recorder   the Mender Update Module, which the installer puts in place

manifest.json, every key required:

    {"format": 1, "name": "edge-recorder", "version": "0.2.0",
     "architecture": "x86_64",                  # platform.machine() of the boxes it is for
     "python": "3.11",                          # the Python minor version its wheels are for
     "catalog": {"schema": 7, "reads_from": 0}, # the catalog schema it writes, the oldest it migrates
     "files": {"images/install.sh": {"sha256": "...", "size": 21000}, ...}}

Every file in the tar but manifest.json is in ``files`` and every file in ``files`` is in the
tar; nothing else (no folders, links or devices) is. ``format`` changes only when an older
updater could no longer read a bundle correctly.

>>> files = {"images/install.sh": FileEntry("0" * 64, 1),
...          "wheels/edge_recorder-0.2.0-py3-none-any.whl": FileEntry("1" * 64, 2)}
>>> m = Manifest("0.2.0", "x86_64", "3.11", 7, 0, files)
>>> Manifest.from_json(m.to_json()) == m
True
>>> m.bundle_name, m.wheel
('edge-recorder-0.2.0-x86_64.tar', 'wheels/edge_recorder-0.2.0-py3-none-any.whl')
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from packaging.version import InvalidVersion, Version

FORMAT = 1
NAME = "edge-recorder"
MANIFEST = "manifest.json"
SIGNATURE_SUFFIX = ".minisig"
INSTALLER = "images/install.sh"
#: The Mender Update Module (images/mender/README.md), which install.sh installs beside the update guard.
MENDER_MODULE = "images/mender/edge-recorder"
#: The files a bundle holds that are programs.
EXECUTABLE = (INSTALLER, MENDER_MODULE)
#: Where each file of a bundle may be: a folder (ending in /) or one file.
PLACES = ("wheels/", "systemd/", INSTALLER, MENDER_MODULE)
MAX_MANIFEST = 1 << 20  # bytes: a manifest lists a few dozen files

_SHA256 = re.compile(r"[0-9a-f]{64}")
_ARCHITECTURE = re.compile(r"[a-z0-9_]+")
_PYTHON = re.compile(r"3\.[0-9]+")


class ManifestError(ValueError):
    """A manifest this version cannot read; the message says what is wrong."""


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    version: str
    architecture: str
    python: str
    catalog_schema: int
    catalog_reads_from: int
    files: Mapping[str, FileEntry]

    @property
    def bundle_name(self) -> str:
        return f"{NAME}-{self.version}-{self.architecture}.tar"

    @property
    def wheel(self) -> str | None:
        """The project's own wheel among the files."""
        prefix = f"wheels/{NAME.replace('-', '_')}-"
        found = [name for name in self.files if name.startswith(prefix) and name.endswith(".whl")]
        return found[0] if len(found) == 1 else None

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "name": NAME,
            "version": self.version,
            "architecture": self.architecture,
            "python": self.python,
            "catalog": {"schema": self.catalog_schema, "reads_from": self.catalog_reads_from},
            "files": {name: {"sha256": e.sha256, "size": e.size} for name, e in sorted(self.files.items())},
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{MANIFEST} is not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise ManifestError(f"{MANIFEST} is not a JSON object")
        if document.get("format") != FORMAT:
            raise ManifestError(f"{MANIFEST} is in format {document.get('format')!r}; this version reads {FORMAT}")
        if document.get("name") != NAME:
            raise ManifestError(f"{MANIFEST} is for {document.get('name')!r}, not {NAME}")
        version = _text(document, "version", re.compile(r".+"))
        try:
            Version(version)
        except InvalidVersion:
            raise ManifestError(f"{MANIFEST}: version {version!r} is not a version number") from None
        catalog = document.get("catalog")
        if not isinstance(catalog, dict):
            raise ManifestError(f"{MANIFEST}: catalog must be an object")
        files = document.get("files")
        if not isinstance(files, dict) or not files:
            raise ManifestError(f"{MANIFEST}: files must be an object that lists the bundle's files")
        entries = {}
        for name, entry in files.items():
            if not is_place(name):
                raise ManifestError(f"{MANIFEST}: {name!r} is not where a bundle keeps files")
            if not isinstance(entry, dict):
                raise ManifestError(f"{MANIFEST}: {name} must be an object")
            entries[name] = FileEntry(_text(entry, "sha256", _SHA256), _count(entry, "size"))
        manifest = cls(
            version=version,
            architecture=_text(document, "architecture", _ARCHITECTURE),
            python=_text(document, "python", _PYTHON),
            catalog_schema=_count(catalog, "schema"),
            catalog_reads_from=_count(catalog, "reads_from"),
            files=entries,
        )
        if INSTALLER not in entries or manifest.wheel is None:
            raise ManifestError(f"{MANIFEST} lists no {INSTALLER} or not exactly one {NAME} wheel")
        return manifest


def is_place(name: str) -> bool:
    """Whether ``name`` is a path a bundle may hold a file at: relative, plain, in one of ``PLACES``.

    >>> [is_place(n) for n in ("wheels/a.whl", "images/install.sh", "../etc/passwd", "wheels/../x", "etc/x")]
    [True, True, False, False, False]
    """
    path = PurePosixPath(name)
    if not name or path.is_absolute() or str(path) != name or any(part in ("", ".", "..") for part in path.parts):
        return False
    return any(
        name == place or (place.endswith("/") and name.startswith(place) and len(path.parts) == 2) for place in PLACES
    )


def _text(document: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ManifestError(f"{MANIFEST}: {key} is missing or not valid ({value!r})")
    return value


def _count(document: Mapping[str, Any], key: str) -> int:
    value = document.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{MANIFEST}: {key} must be a whole number ({value!r})")
    return value
