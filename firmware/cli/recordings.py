"""``edge-recorder recordings list|show|export|play|delete``: the catalog from the command line.

A recording is named by its id or by a unique prefix of it (``MIN_PREFIX``
characters or more). Where the catalog is (``--config``, ``--state-dir``) may
be said before or after the verb. The box's files belong to its own user: a
user who may not use them gets the PermissionError that ``main`` turns into
one line naming the user to run the command as.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from .. import config as cfg
from ..catalog import Catalog, CatalogError
from ..cloudevents import CloudEvents, Timebase
from ..control import Control, ControlError, Offline
from ..core.options import Format, redact
from ..delivery.routes import Routes
from ..journal import Journal, public
from ..media.convert import NoMedia, media_for
from ..media.encrypted import SUFFIX as ENCRYPTED_SUFFIX
from . import exits
from .access import require

if TYPE_CHECKING:
    from hal.audio import Playback

COLUMNS = ("id", "status", "end_reason", "source", "start_time", "duration", "size", "delivery", "name")
#: The shortest id prefix taken for an id: "RE" and two hex digits.
MIN_PREFIX = 4
#: Candidates an ambiguous prefix lists.
CANDIDATES = 5
#: What ``export`` can write: the formats the box records in.
FORMATS = tuple(f.value for f in Format)
#: Seconds of audio ``play`` keeps queued for the device: enough to never run dry, little to wait for at the end.
PLAY_AHEAD = 1.0
_PIECE = 4000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recordings",
        help="list, show, export, play or delete recordings in the catalog",
        description="The catalog from the command line. A recording is named by its id or by a unique prefix of "
        f"it ({MIN_PREFIX} characters or more). --config and --state-dir may come before or after the verb.",
    )
    _where(p, None)
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=type(p))
    here = argparse.ArgumentParser(add_help=False)
    _where(here, argparse.SUPPRESS)  # said after the verb, or not at all: what was said before it stays
    ls = verbs.add_parser(
        "list",
        parents=[here],
        help="recordings, newest first",
        description="Recordings, newest first. delivery says how their uploads stand: delivered (every upload "
        "confirmed), pending (queued or being retried), failed (given up), cancelled, or - (nothing to upload: "
        "no destination, no media, or not finished). Sizes and durations are for people; --json has the raw "
        "numbers.",
    )
    ls.add_argument("--status", help="only this status (in-progress, completed, absent, failed, deleted...)")
    ls.add_argument("--call-id", help="only this call")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="JSON for scripts: every field, sizes in bytes, seconds")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", parents=[here], help="every field of one recording and its uploads (JSON)")
    show.add_argument("id", help="the recording's id, or a unique prefix of it")
    show.set_defaults(run=run_show)
    export = verbs.add_parser(
        "export",
        parents=[here],
        help="write a recording's audio out, as .wav or .mp3",
        description="Write a recording's audio to DEST in the format its name asks for (.wav or .mp3), converted "
        "on the way when the recording was made in the other. DEST a directory: the file as it is in the spool, "
        "named after the recording. An existing file is kept unless --force. A recording encrypted at rest "
        f"cannot be converted on the box: export it as {ENCRYPTED_SUFFIX} (or to a directory) and decrypt it "
        "with the private key (edge-recorder decrypt).",
    )
    export.add_argument("id", help="the recording's id, or a unique prefix of it")
    export.add_argument("dest", type=Path, help="file (.wav or .mp3) or directory to write to")
    export.add_argument("--force", action="store_true", help="replace DEST if it exists")
    export.set_defaults(run=run_export)
    play = verbs.add_parser(
        "play",
        parents=[here],
        help="play a recording on the playback device ([audio] playback)",
        description="Play a recording on the box's playback device ([audio] playback), both tracks of a dual "
        "recording mixed to one. A running box may hold the device: then it is busy.",
    )
    play.add_argument("id", help="the recording's id, or a unique prefix of it")
    play.set_defaults(run=run_play)
    delete = verbs.add_parser(
        "delete",
        parents=[here],
        help="delete a finished recording's media; its metadata stays as deleted",
        description="Delete a finished recording's media; its metadata stay 40 days with status deleted. The "
        "deletion is reported as recording.deleted (through the running box's MQTT and webhooks) and audited. "
        "A recording whose upload is not confirmed yet is refused: its media would be lost.",
    )
    delete.add_argument("id", help="the recording's id, or a unique prefix of it")
    delete.add_argument(
        "--force", action="store_true", help="delete also when its upload is not confirmed: the upload is cancelled"
    )
    delete.set_defaults(run=run_delete)


def _where(p: argparse.ArgumentParser, default) -> None:
    """``--config`` and ``--state-dir``: where the config, and so the catalog, are."""
    p.add_argument(
        "-c",
        "--config",
        default=default,
        help=f"config file (default ${cfg.ENV_VAR} or {cfg.DEFAULT_PATH}; absent: every key's default)",
    )
    p.add_argument(
        "--state-dir", type=Path, default=default, help="the spool and catalog are here (as for run --state-dir)"
    )


class Refusal(Exception):
    """What a verb will not do, as its exit status and the one line that says why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _with_catalog(fn):
    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            catalog = _open_catalog(args)
        except Refusal as exc:
            return exits.fail(exc.code, str(exc))
        try:
            return fn(args, catalog)
        except Refusal as exc:
            return exits.fail(exc.code, str(exc))
        except sqlite3.DatabaseError as exc:  # busy beyond the timeout, a disk error: say which file
            return exits.fail(exits.UNAVAILABLE, f"{catalog.path}: {exc}")
        finally:
            catalog.close()

    return wrapped


def _open_catalog(args: argparse.Namespace) -> Catalog:
    path = args.state_dir / "catalog.sqlite3" if args.state_dir else Path(_config(args).catalog["path"])
    require(path, write=True)
    if not path.exists():
        raise Refusal(exits.NOINPUT, f"{path}: no catalog there yet")
    try:
        return Catalog(path)
    except CatalogError as exc:
        raise Refusal(exits.NOINPUT, str(exc)) from None
    except sqlite3.DatabaseError as exc:
        raise Refusal(exits.UNAVAILABLE, f"{path}: {exc}") from None


def _config(args: argparse.Namespace) -> cfg.Config:
    try:
        return cfg.load(args.config)
    except cfg.ConfigError as exc:
        require(Path(args.config or os.environ.get(cfg.ENV_VAR) or cfg.DEFAULT_PATH), write=False)
        raise Refusal(exits.CONFIG, str(exc)) from None


# -- naming a recording ------------------------------------------------------------------------------
def _get(catalog: Catalog, given: str) -> dict:
    """The recording whose id is ``given``, or the only one whose id starts with it."""
    row = catalog.get(given)
    if row is not None:
        return row
    if len(given) < MIN_PREFIX:
        raise Refusal(
            exits.NOINPUT,
            f"no recording {given!r} in the catalog (a prefix of an id needs at least {MIN_PREFIX} characters)",
        )
    ids = catalog.ids_starting_with(given, CANDIDATES + 1)
    if not ids:
        raise Refusal(exits.NOINPUT, f"no recording {given!r} in the catalog")
    if len(ids) > 1:
        shown = ", ".join(ids[:CANDIDATES]) + (", ..." if len(ids) > CANDIDATES else "")
        raise Refusal(exits.USAGE, f"{given!r} starts more than one recording's id: {shown}; give more of it")
    return catalog.get(ids[0])


# -- list and show -----------------------------------------------------------------------------------
@_with_catalog
def run_list(args: argparse.Namespace, catalog: Catalog) -> int:
    rows = catalog.list(status=args.status, call_id=args.call_id, limit=args.limit)
    listed = [(row, catalog.upload_states(row["id"])) for row in rows]
    if args.json:
        out = [public(row, uploads=uploads) | {"delivery": delivery(uploads)} for row, uploads in listed]
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return exits.OK
    if not rows:
        print("no recordings")
        return exits.OK
    table = [COLUMNS] + [_cells(row, uploads) for row, uploads in listed]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return exits.OK


def delivery(uploads: list[dict]) -> str:
    """How a recording's uploads stand, in a word (``list``'s delivery column).

    >>> delivery([{"state": "done"}]), delivery([{"state": "done"}, {"state": "queued"}]), delivery([])
    ('delivered', 'pending', '-')
    """
    states = {u["state"] for u in uploads}
    if not states:
        return "-"
    if "failed" in states:
        return "failed"
    if states - {"done", "cancelled"}:
        return "pending"
    return "cancelled" if "cancelled" in states else "delivered"


def _cells(row: dict, uploads: list[dict]) -> tuple[str, ...]:
    shown = {
        "duration": human_duration(row.get("duration")),
        "size": human_size(row.get("size")),
        "delivery": delivery(uploads),
        "name": row["name"] if row.get("name") and row["name"] != row["id"] else "-",  # unnamed: the id
    }
    return tuple(shown[c] if c in shown else ("-" if row.get(c) is None else str(row[c])) for c in COLUMNS)


def human_size(size: int | None) -> str:
    """Bytes as people read them, in powers of 1000.

    >>> human_size(512), human_size(48044), human_size(1_046_444), human_size(999_990)
    ('512 B', '48.0 kB', '1.0 MB', '1.0 MB')
    """
    if size is None:
        return "-"
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 999.95:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"


def human_duration(seconds: float | None) -> str:
    """Seconds as a clock shows them, to the nearest second.

    >>> human_duration(3.0), human_duration(65.4), human_duration(3725)
    ('0:03', '1:05', '1:02:05')
    """
    if seconds is None:
        return "-"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@_with_catalog
def run_show(args: argparse.Namespace, catalog: Catalog) -> int:
    row = _get(catalog, args.id)
    uploads = catalog.upload_states(row["id"])
    # A status callback's URL may carry its receiver's token: shown as the API shows it, redacted.
    options = {key: redact(value) if isinstance(value, str) else value for key, value in row["options"].items()}
    extra = {"delivery": delivery(uploads), "options": options, "path": row["path"]}
    json.dump(public(row, uploads=uploads) | extra, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return exits.OK


# -- the audio: export and play -------------------------------------------------------------------------
def _media(row: dict) -> Path:
    """The recording's file in the spool."""
    path = Path(row["path"]) if row.get("path") else None
    if path is None or not path.exists():
        raise Refusal(exits.NOINPUT, f"{row['id']} has no media file (status {row['status']})")
    return path


def _not_encrypted(row: dict, path: Path, doing: str, instead: str = "") -> None:
    """The box holds only the public key: it cannot be ``doing`` anything to an encrypted recording's audio."""
    if row.get("encryption") or path.suffix == ENCRYPTED_SUFFIX:
        raise Refusal(
            exits.UNAVAILABLE,
            f"recording {row['id']} is encrypted at rest and the box holds only the public key: it cannot be "
            f"{doing} here; decrypt it with the private key, off the box (edge-recorder decrypt){instead}",
        )


@_with_catalog
def run_export(args: argparse.Namespace, catalog: Catalog) -> int:
    row = _get(catalog, args.id)
    source = _media(row)
    if args.dest.is_dir():  # the file as it is, named after the recording
        dest, fmt = args.dest / source.name, None
    else:
        dest, fmt = args.dest, _export_format(args.dest, source)
        if fmt is not None:
            instead = f"; to take it off the box as it is, export it as {ENCRYPTED_SUFFIX} or to a directory"
            _not_encrypted(row, source, f"converted to .{fmt}", instead)
    if dest.exists() and not args.force:
        raise Refusal(exits.CANTCREAT, f"{dest}: exists (use --force to replace it)")
    require(source, write=False)
    work = _workspace(dest)
    try:
        if fmt is None or source.suffix == f".{fmt}":
            made = work / dest.name
            shutil.copyfile(source, made)
        else:  # the conversion the media API serves .wav and .mp3 downloads with, its copy made here
            made = media_for({**row, "sha256": row.get("sha256") or ""}, fmt, None, work)
        os.replace(made, dest)
    except OSError as exc:
        which = source if exc.filename and Path(exc.filename) == source else dest
        raise Refusal(exits.NOINPUT if which == source else exits.CANTCREAT, f"{which}: {exc.strerror}") from None
    except NoMedia as exc:
        raise Refusal(exits.NOINPUT, str(exc)) from None
    except RuntimeError as exc:  # libsndfile: not readable as audio
        raise Refusal(exits.DATAERR, f"{source}: cannot be read as audio: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(dest)
    return exits.OK


def _export_format(dest: Path, source: Path) -> str | None:
    """The format ``dest``'s name asks for; None: a copy as it is (an encrypted recording as ``.era``)."""
    ext = dest.suffix.lower()
    if ext == ENCRYPTED_SUFFIX and source.suffix == ENCRYPTED_SUFFIX:
        return None
    if ext[1:] in FORMATS:
        return ext[1:]
    names = " or ".join(f".{f}" for f in FORMATS)
    if source.suffix == ENCRYPTED_SUFFIX:
        names = f"{ENCRYPTED_SUFFIX} (it is encrypted: the box cannot convert it)"
    raise Refusal(
        exits.USAGE,
        f"{dest}: cannot write {ext or 'a file without an extension'}; name it {names}, or give a directory",
    )


def _workspace(dest: Path) -> Path:
    """A private folder beside ``dest``: the file is made there and renamed into place, so ``dest`` is never
    half-written, and a recording as long as the card allows needs no room elsewhere."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as exc:
        raise Refusal(exits.CANTCREAT, f"{dest}: {exc.strerror}") from None


@_with_catalog
def run_play(args: argparse.Namespace, catalog: Catalog) -> int:
    """Through the playback HAL the box plays its beeps with, fed piece by piece."""
    from hal.audio import AlsaPlayback, DeviceLost, DeviceUnavailable

    row = _get(catalog, args.id)
    source = _media(row)
    _not_encrypted(row, source, "played")
    device = _config(args).audio["playback"]
    if not device:
        raise Refusal(
            exits.CONFIG,
            "[audio] playback is empty: there is no device to play on; set it to an ALSA playback PCM "
            "(edge-recorder devices lists them)",
        )
    require(source, write=False)
    try:
        audio = sf.SoundFile(source)
    except RuntimeError as exc:
        raise Refusal(exits.DATAERR, f"{source}: cannot be read as audio: {exc}") from None
    with audio:
        speaker = AlsaPlayback(device, audio.samplerate)
        try:
            speaker.open()
        except DeviceUnavailable as exc:
            raise Refusal(exits.UNAVAILABLE, str(exc)) from None
        try:
            _play(speaker, audio)
        except DeviceLost as exc:
            raise Refusal(exits.UNAVAILABLE, str(exc)) from None
        finally:
            speaker.close()
    print(f"{row['id']}: played on {device} ({human_duration(audio.frames / audio.samplerate)})")
    return exits.OK


def _play(speaker: Playback, audio: sf.SoundFile) -> None:
    """Hand the device the recording a piece at a time, never more than ``PLAY_AHEAD`` seconds ahead of it:
    the playback writes in the background, so the device paces the sound, and closing it waits only for
    what is still queued."""
    began, queued = time.monotonic(), 0.0
    while True:
        block = audio.read(_PIECE, dtype="int16", always_2d=True)
        if not len(block):
            return
        if block.shape[1] > 1:  # one speaker: both tracks mixed, as the media API's one-channel downmix
            block = block.astype(np.int32).mean(axis=1, keepdims=True).astype(np.int16)
        speaker.play(block)
        queued += len(block) / audio.samplerate
        ahead = queued - (time.monotonic() - began)
        if ahead > PLAY_AHEAD:
            time.sleep(ahead - PLAY_AHEAD)


# -- delete --------------------------------------------------------------------------------------------
@_with_catalog
def run_delete(args: argparse.Namespace, catalog: Catalog) -> int:
    """Through the control API, as the box's front ends: the same rule, audit row and recording.deleted, which
    the running box's delivery picks up from the outbox."""
    row = _get(catalog, args.id)
    config = _config(args)
    device_id = config.device_id
    reported: list[dict] = []
    journal = Journal(
        catalog,
        None,
        CloudEvents(device_id, Timebase(datetime.now(UTC), 1)),
        routes=Routes(config, device_id).items,
        device_id=device_id,
        input_rate=1,
        sinks=[reported.append],
    )
    try:
        row = Control(Offline(), journal).delete(row["id"], force=args.force, actor="cli")
    except ControlError as exc:
        return exits.fail(exits.USAGE, str(exc))
    cancelled = reported[-1]["data"]["cancelled_uploads"] if reported else []
    note = "; ".join(f"upload to {u['destination']} ({u['state']}) cancelled" for u in cancelled)
    print(f"{row['id']}: deleted (metadata kept 40 days){'; ' + note if note else ''}")
    return exits.OK
