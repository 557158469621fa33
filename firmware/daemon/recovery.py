"""Start-up recovery: part files a crash left, and a catalog that agrees with the spool.

Theory of operation
-------------------
The spool is the truth about audio, the catalog about everything else. Each
recording leaves these files in the spool directory:

- while it runs: ``.<id>.part.wav`` (a crash-safe WAV, ``media.partfile``), or
  ``.<id>.part.era`` when encrypted (``media.encrypted``), and
  ``.<id>.part.json`` (its fields at the start);
- when finished: ``<id>.<format>`` (``<id>.era`` when encrypted) and
  ``<id>.json`` (its catalog row).

On start, in this order:

1. every part file is repaired (its header set from its length) and finalised
   like any other recording, with ``end_reason = recovered``; its fields come
   from the catalog, else from its ``.part.json``, else from the WAV itself.
   An encrypted part cannot be repaired nor needs to be: it is published as it
   is, its length counted from its complete segments; a torn last segment
   stays for the decryptor to report;
2. catalog rows still in progress with a finished file are finished from it
   (from its ``<id>.json`` when that was written, else from the file itself,
   ``end_reason = recovered``): the recording ended, but a full card kept the
   catalog from saying so. Those with neither part nor finished file are
   marked ``failed`` (their audio never reached the card);
3. finished files the catalog does not know (a catalog rebuilt after
   corruption) are adopted from their ``.json``;
4. completed rows whose file is gone are marked ``failed`` with
   ``error_code = media_missing``.

Nothing that exists is deleted, and running it twice changes nothing more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import soundfile

from ..catalog import UNFINISHED, Catalog, rfc3339
from ..core import RecordingOptions, new_sid
from ..media import encrypted
from ..media.partfile import HEADER, read_header, repair
from ..spool import Reserve, Takes, is_encrypted, parts

log = logging.getLogger("edge-recorder.recovery")


def recover(spool: Path, catalog: Catalog, takes: Takes, reserve: Reserve | None = None) -> list[dict[str, Any]]:
    """Run the four steps; return the rows of recordings finalised now (to announce). A card too full to
    finish them gives up ``reserve`` (``spool.Reserve``) for it."""
    done = []
    for rid, path in parts(spool):
        try:
            row = _recover_part(catalog, takes, rid, path)
        except OSError as exc:  # e.g. the card is still full: keep the part for the next start
            log.error("%s: cannot be finalised now (%s); kept for the next start", path, exc)
            continue
        if row is not None:
            done.append(row)
    for row in catalog.unfinished():
        files = _final_files(spool, row["id"])
        if files:  # finished on the card, but the catalog could not say so (the card was full)
            for attempt in range(2):
                try:
                    done.append(_finish_from_file(catalog, row, files[0]))
                    break
                except (OSError, sqlite3.Error) as exc:  # the card is still full
                    if attempt == 0 and reserve is not None and reserve.release():
                        continue
                    log.error("%s: cannot be finished now (%s); tried again at the next start", files[0], exc)
                except (RuntimeError, ValueError) as exc:  # not audio after all (libsndfile, age): say so
                    _failed(catalog, row["id"], "media_unreadable", f"{files[0].name} cannot be read as audio: {exc}")
                    break
        else:
            _failed(
                catalog, row["id"], "media_missing", "the recording's audio was not found in the spool after a restart"
            )
    for meta in sorted(spool.glob("RE*.json")):
        if catalog.get(meta.stem) is None:
            try:
                row = json.loads(meta.read_text())
            except (OSError, ValueError) as exc:
                log.error("%s: unreadable (%s); not adopted", meta, exc)
                continue
            catalog.upsert(row)
            log.warning("adopted %s from the spool", meta.stem)
    for row in catalog.list(status="completed"):
        if row.get("path") and not Path(row["path"]).exists():
            catalog.update(
                row["id"],
                status="failed",
                error_code="media_missing",
                error_message=f"the media file {row['path']} is missing",
            )
    return done


def _failed(catalog: Catalog, rid: str, code: str, message: str) -> None:
    """An unfinished row recovery cannot finish: failed, saying why."""
    catalog.update(rid, status="failed", state="error", end_reason="recovered", error_code=code, error_message=message)
    log.error("%s: %s; marked failed", rid, message)


def _final_files(spool: Path, rid: str) -> list[Path]:
    return [p for p in spool.glob(f"{rid}.*") if p.suffix in (".wav", ".mp3", encrypted.SUFFIX)]


def _recover_part(catalog: Catalog, takes: Takes, rid: str, path: Path) -> dict[str, Any] | None:
    if is_encrypted(path):
        try:
            scanned = encrypted.scan(path)
        except encrypted.NotEncrypted:
            log.error("%s: not a part file this firmware wrote; left for inspection", path)
            return None
        frames, shape = scanned.frames, scanned.header.shape
    else:
        frames = repair(path)
        if frames is None:
            log.error("%s: not a part file this firmware wrote; left for inspection", path)
            return None
        with open(path, "rb") as fh:
            shape, _ = read_header(fh.read(HEADER))
    sidecar = path.with_name(f".{rid}.part.json")
    row = catalog.get(rid) or _read_json(sidecar) or _bare_row(rid, shape, path)
    options = RecordingOptions.from_mapping({k: v for k, v in row.get("options", {}).items()})
    duration = frames / shape.sample_rate
    if frames == 0:
        path.unlink()
        fields = {"status": "absent", "state": "finished", "end_reason": "recovered", "duration": 0.0, "size": 0}
        written = None
    else:
        written, problem = takes.finish_part(path, rid, options)
        fields = {
            "status": "completed",
            "state": "finished",
            "end_reason": "recovered",
            "duration": round(duration, 4),
            "size": written.size,
            "sha256": written.sha256,
            "path": str(written.path),
            "error_message": problem,
            "encryption": encrypted.describe(written.path) if is_encrypted(written.path) else None,
        }
    start = _parse_time(row.get("start_time"))
    fields["end_time"] = rfc3339(start + timedelta(seconds=duration)) if start else None
    base = {k: v for k, v in row.items() if k != "input_rate"}
    catalog.upsert({**base, **fields})
    full = catalog.get(rid)
    if written is not None:
        from ..media.partfile import write_atomic

        write_atomic(written.path.with_name(f"{rid}.json"), json.dumps(full).encode())
    sidecar.unlink(missing_ok=True)
    log.warning("recovered %s: %.2f s of audio kept", rid, duration)
    return full


def _finish_from_file(catalog: Catalog, row: dict[str, Any], media: Path) -> dict[str, Any]:
    """A row still in progress whose file was published: its ``<id>.json`` has the fields it ended with;
    without one (it could not be written either), the fields are read from the file itself."""
    rid = row["id"]
    ended = _read_json(media.with_name(f"{rid}.json"))
    if ended is not None and ended.get("status") not in UNFINISHED:
        catalog.upsert({**row, **ended})
        log.warning("finished %s from its sidecar: the catalog could not be updated when it ended", rid)
        return catalog.get(rid)
    size, digest = _size_and_sha256(media)
    if is_encrypted(media):
        scanned = encrypted.scan(media)
        frames, rate = scanned.frames, scanned.header.shape.sample_rate
    else:
        info = soundfile.info(str(media))
        frames, rate = info.frames, info.samplerate
    duration = frames / rate if rate else 0.0
    start = _parse_time(row.get("start_time"))
    fields = {
        "status": "completed" if frames else "absent",
        "state": "finished",
        "end_reason": "recovered",
        "duration": round(duration, 4),
        "size": size,
        "sha256": digest,
        "path": str(media) if frames else None,
        "end_time": rfc3339(start + timedelta(seconds=duration)) if start else None,
        "encryption": encrypted.describe(media) if is_encrypted(media) else None,
    }
    catalog.upsert({**{k: v for k, v in row.items() if k != "input_rate"}, **fields})
    full = catalog.get(rid)
    from ..media.partfile import write_atomic

    try:  # the sidecar only helps rebuild a lost catalog: a card still full must not stop the announcement
        write_atomic(media.with_name(f"{rid}.json"), json.dumps(full).encode())
    except OSError as exc:
        log.warning("%s.json not written (%s); the catalog has the recording", rid, exc.strerror)
    log.warning("finished %s from %s: %.2f s of audio the catalog had not recorded", rid, media.name, duration)
    return full


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _bare_row(rid: str, shape, path: Path) -> dict[str, Any]:
    """Fields for a part file nothing else describes: WAV, from its header and modification time."""
    started = datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    return {
        "id": rid,
        "name": rid,
        "call_id": new_sid("CA"),
        "source": "auto",
        "status": "in-progress",
        "state": "recording",
        "format": "wav",
        "sample_rate": shape.sample_rate,
        "channels": shape.channels,
        "track": "both",
        "options": {
            "format": "wav",
            "sample_rate": shape.sample_rate,
            "channels": "dual" if shape.channels == 2 else "mono",
        },
        "start_time": rfc3339(started),
    }


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


__all__ = ["UNFINISHED", "recover"]
