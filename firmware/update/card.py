"""A bundle on the boot partition: the way in for a box with no network, or an installer with a card reader.

The installer copies ``edge-recorder-VERSION-ARCH.tar`` and its ``.minisig`` onto the card's boot
partition (where ``edge-recorder.toml`` goes for provisioning) and starts the box. At boot,
``edge-recorder-update.service`` runs before the daemon and gives the bundle to ``apply.update``,
checked as every bundle is: the signature against the box's own key, then the manifest and every
file. What happened is left on the card, as provisioning does:

- installed: the bundle and its signature are removed from the card (they would be applied again,
  and a card is small), and ``edge-recorder-update.txt`` says which version now runs and what it
  replaced;
- refused: the bundle stays, with ``NAME.tar.error.txt`` beside it naming the reason. The same
  file is not tried again at the next boot (the note is newer than it); replacing it is. A
  refusal that may pass later (the last update not confirmed yet, no space) is tried again.

One bundle per boot: with several on the card, the newest file is taken and the others are left
with a note. Either way the outcome is also in the box's update history, which the daemon
reports as ``device.update`` events once it runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PATTERN = "edge-recorder-*.tar"
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


def _refused_already(bundle: Path) -> bool:
    note = error_note(bundle)
    try:
        return note.stat().st_mtime >= bundle.stat().st_mtime
    except OSError:
        return False


def installed(bundle: Path, text: str) -> None:
    """The bundle was installed: it and its signature leave the card, the result is written beside them."""
    for path in (bundle, bundle.with_name(bundle.name + ".minisig"), error_note(bundle)):
        path.unlink(missing_ok=True)
    _write(bundle.parent / RESULT, text)


def refused(bundle: Path, text: str, *, final: bool = True) -> None:
    """The bundle was refused: the note beside it says why. A refusal that is not ``final`` (the last update
    not confirmed yet, no space) is tried again at the next boot: its note is dated before the bundle."""
    note = error_note(bundle)
    _write(note, text)
    if not final:
        kept = bundle.stat()
        os.utime(note, ns=(kept.st_atime_ns, kept.st_mtime_ns - 4_000_000_000))  # FAT keeps times to 2 s


def _write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="\r\n") as f:  # read on Windows machines too
        f.write(text.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
