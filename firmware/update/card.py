"""A bundle on the boot partition: the way in for a box with no network, or an installer with a card reader.

The installer copies ``edge-recorder-VERSION-ARCH.tar`` and its ``.minisig`` onto the card's boot
partition (where ``edge-recorder.toml`` goes for provisioning) and starts the box. At boot,
``edge-recorder-update-card.service`` runs before the daemon and gives the bundle to ``apply.update``,
checked as every bundle is: the signature against the box's own key, then the manifest and every
file. What happened is left on the card, as provisioning does:

- installed: the bundle and its signature are removed from the card (they would be applied again,
  and a card is small), and ``edge-recorder-update.txt`` says which version now runs and what it
  replaced;
- refused: the bundle stays, with ``NAME.tar.error.txt`` beside it naming the reason. The same
  bundle is not tried again at the next boot: the note names it by its size and its signature's
  sha256 (``identity``; file times are no help: a box without a network boots with its clock
  behind, and FAT keeps the local time of whichever computer wrote the file). A new bundle is
  tried; so is one whose refusal may pass later (the last update not confirmed yet, no space).

One bundle per boot: with several on the card, the newest file is taken and the others are left
with a note. Either way the outcome is also in the box's update history, which the daemon
reports as ``device.update`` events once it runs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from . import signing

PATTERN = "edge-recorder-*.tar"
IDENTITY = "refused bundle: "
MAX_NOTE = 64 * 1024
RESULT = "edge-recorder-update.txt"
BOOT = (Path("/boot/firmware"), Path("/boot"))


def error_note(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".error.txt")


@dataclass(frozen=True)
class Found:
    take: Path | None  # the bundle to apply at this boot, None when there is none (or it was refused already)
    skipped: list[tuple[Path, str]]  # bundles left, and why


def look(boot_dirs: list[Path]) -> Found:
    """The bundle to apply from the first of ``boot_dirs`` that holds any, and those left alone."""
    for folder in boot_dirs:
        try:
            bundles = [p for p in folder.glob(PATTERN) if p.is_file() and not p.is_symlink()]
        except OSError:
            continue
        if not bundles:
            continue
        bundles.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        newest, others = bundles[0], bundles[1:]
        skipped = [(p, f"only one bundle is taken per boot: {newest.name} is newer") for p in others]
        if _refused_already(newest):
            skipped.append((newest, f"refused already ({error_note(newest).name}); replace the bundle to try again"))
            return Found(None, skipped)
        return Found(newest, skipped)
    return Found(None, [])


def identity(bundle: Path) -> str:
    """What a refusal note names a bundle by: its size and its signature's sha256 ("" when either is missing)."""
    try:
        size = bundle.stat().st_size
        with bundle.with_name(bundle.name + ".minisig").open("rb") as f:
            signature = hashlib.sha256(f.read(signing.MAX_SIGNATURE_BYTES + 1)).hexdigest()
    except OSError:
        return ""
    return f"{size} bytes, signature sha256 {signature}"


def _refused_already(bundle: Path) -> bool:
    try:
        with error_note(bundle).open("rb") as f:
            note = f.read(MAX_NOTE).decode("utf-8", errors="replace")
    except OSError:
        return False
    given = identity(bundle)
    return bool(given) and f"{IDENTITY}{given}" in note.splitlines()


def installed(bundle: Path, text: str) -> None:
    """The bundle was installed: it and its signature leave the card, the result is written beside them."""
    for path in (bundle, bundle.with_name(bundle.name + ".minisig"), error_note(bundle)):
        path.unlink(missing_ok=True)
    _write(bundle.parent / RESULT, text)


def refused(bundle: Path, text: str, *, final: bool = True) -> None:
    """The bundle was refused: the note beside it says why. A ``final`` refusal names the bundle, so that the same
    one is not tried again; any other is tried again at the next boot."""
    given = identity(bundle) if final else ""
    _write(error_note(bundle), text + (f"\n{IDENTITY}{given}" if given else ""))


def _write(path: Path, text: str) -> None:
    """``text`` into ``path`` by way of a new file (never through a link: a boot partition that is not FAT could
    hold one), synced, then renamed over it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\r\n") as f:  # read on Windows machines too
            f.write(text.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
