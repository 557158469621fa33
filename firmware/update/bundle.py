"""A release bundle as the box receives it: signature first, then the manifest, then every file.

The bundle is read once, from where it was put, while its signature is checked; what is read is
copied into the update's private staging folder at the same time. Everything after that (the
manifest, the files) comes from that copy, so nothing can change between the check and the use.

Nothing in the tar is trusted before the signature holds. After it, the tar's members are taken
one by one as plain files at the places a bundle keeps files (``manifest.PLACES``), each
written out while its sha256 is computed: no links, folders, devices, absolute paths or ``..``,
and exactly the files the manifest lists.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import Reason, Refused, signing
from .manifest import EXECUTABLE, MANIFEST, MAX_MANIFEST, Manifest, ManifestError

_END = 2 * tarfile.BLOCKSIZE  # a whole tar ends with (at least) two zero blocks


@dataclass
class Bundle:
    """A bundle whose signature held, copied to ``copy``."""

    source: Path
    copy: Path
    manifest: Manifest
    trusted_comment: str
    extracted: Path | None = None

    @classmethod
    def open(cls, path: Path, key_path: Path, copy: Path) -> Bundle:
        """Check ``path`` against its ``.minisig`` and the key at ``key_path`` while copying it to ``copy``."""
        signature = signing.signature_path(path)
        if not path.is_file():
            raise Refused(Reason.MISSING, f"no such bundle: {path}")
        if not signature.is_file():
            raise Refused(
                Reason.MISSING, f"no signature {signature.name} beside {path.name} (minisign -Sm {path.name} makes it)"
            )
        if not key_path.is_file():
            raise Refused(
                Reason.NO_KEY,
                f"no update key at {key_path}: the box takes only bundles signed with it "
                "(images/install.sh --update-key FILE installs it)",
            )
        st = key_path.stat()
        if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022):
            raise Refused(
                Reason.NO_KEY,
                f"{key_path} must be root's and writable by root only (it decides what the box runs): "
                f"sudo chown root: {key_path} && sudo chmod 0644 {key_path}",
            )
        try:
            key = signing.load_public_key(key_path)
        except signing.SignatureError as exc:
            raise Refused(Reason.NO_KEY, str(exc)) from None
        try:
            with path.open("rb") as data, copy.open("wb") as out:
                comment = signing.verify(data, signature, key, copy_to=out)
        except signing.SignatureError as exc:
            copy.unlink(missing_ok=True)
            if _truncated(path):
                raise Refused(
                    Reason.TRUNCATED,
                    f"{path.name} is truncated ({path.stat().st_size} bytes, and no tar end): copy or download it again",
                ) from None
            raise Refused(
                Reason.SIGNATURE, f"{path.name} is not signed by the key in {key_path.name} ({exc})"
            ) from None
        return cls(path, copy, _read_manifest(path, copy), comment)

    def extract(self, into: Path) -> None:
        """Every file into ``into``, each checked against its size and sha256 in the manifest."""
        files = self.manifest.files
        seen: set[str] = set()
        into.mkdir(mode=0o755)
        with tarfile.open(self.copy, "r:") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                if member.name not in files or not member.isfile() or member.name in seen:
                    raise Refused(
                        Reason.DAMAGED, f"{self.source.name}: {member.name!r} is not a file the manifest lists"
                    )
                seen.add(member.name)
                expected = files[member.name]
                target = into / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                source = tar.extractfile(member)
                assert source is not None
                with source, target.open("wb") as out:
                    while chunk := source.read(1 << 16):
                        digest.update(chunk)
                        out.write(chunk)
                if member.size != expected.size or digest.hexdigest() != expected.sha256:
                    raise Refused(
                        Reason.TAMPERED,
                        f"{self.source.name}: {member.name} does not match its sha256 in the manifest (tampered)",
                    )
                target.chmod(0o755 if member.name in EXECUTABLE else 0o644)
        missing = sorted(set(files) - seen)
        if missing:
            raise Refused(Reason.TAMPERED, f"{self.source.name}: {missing[0]} is in the manifest but not in the bundle")
        self.extracted = into

    def discard(self) -> None:
        """Drop the copy once extracted: the space goes to the new slot."""
        self.copy.unlink(missing_ok=True)

    def unpacked_size(self) -> int:
        """What the wheels hold, unpacked (bytes)."""
        assert self.extracted is not None
        total = 0
        for name in self.manifest.files:
            if name.endswith(".whl"):
                with zipfile.ZipFile(self.extracted / name) as wheel:
                    total += sum(info.file_size for info in wheel.infolist())
        return total


def _read_manifest(source: Path, copy: Path) -> Manifest:
    try:
        with tarfile.open(copy, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST:
                raise ManifestError(f"the bundle does not begin with its {MANIFEST}")
            data = tar.extractfile(first)
            assert data is not None
            return Manifest.from_json(data.read())
    except (tarfile.TarError, ManifestError) as exc:
        raise Refused(Reason.DAMAGED, f"{source.name}: {exc}") from None


def _truncated(path: Path) -> bool:
    """Whether a file ends before a tar's end: a whole number of blocks, the last two all zero."""
    size = path.stat().st_size
    if size < _END or size % tarfile.BLOCKSIZE:
        return True
    with path.open("rb") as f:
        f.seek(size - _END)
        return f.read(_END) != bytes(_END)
