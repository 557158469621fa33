"""``edge-recorder status``: what the box is doing, read on the box without the network.

Shows whether the daemon runs (pid, uptime, firmware), what it is recording and for how long,
the broker connection, what waits for delivery to each destination with the last error, free
space on the spool, and the catalog's counts. The running daemon's part comes from the status
file it keeps (/run/edge-recorder/status.json on a box; status.json beside the catalog when the
catalog is elsewhere, as with run --state-dir); the rest is read from the catalog, read-only. When the daemon
is not running it says so and why, still shows what the catalog knows (recordings a crash left
in progress, the delivery backlog, free space), and exits 69 (EX_UNAVAILABLE); 0 when running.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import config as cfg
from ..catalog import UNFINISHED
from ..daemon import status_file
from ..findings import printable
from ..spool import RESERVE_BYTES, Reserve
from . import exits
from .access import require
from .run import add_config_argument, load


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="what the box is doing: recordings, delivery backlog, broker, free space",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_argument(p)
    p.add_argument("--state-dir", type=Path, help="the spool and catalog are here (as for run --state-dir)")
    p.add_argument("--json", action="store_true", help="the same facts as JSON, for scripts")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        readable_config(args.config)
        config = load(args)
        report = gather(config)
    except cfg.ConfigError as exc:
        return exits.fail(exits.CONFIG, str(exc))
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        # Printed as escapes: an upload server's answer or a key's name must not drive the terminal.
        sys.stdout.write("".join(f"{printable(line)}\n" for line in text(report)))
    return exits.OK if report["running"] else exits.UNAVAILABLE


def readable_config(explicit: str | None) -> None:
    """PermissionError when the config file is there but this user may not read it (loading it says the rest)."""
    require(Path(explicit or os.environ.get(cfg.ENV_VAR) or cfg.DEFAULT_PATH))


# -- the facts ----------------------------------------------------------------------------------------
def gather(config: cfg.Config) -> dict[str, Any]:
    """Everything ``status`` shows, as JSON-ready data (``--json`` prints it as it is)."""
    catalog_path = Path(config.catalog["path"])
    path = status_file.status_path(catalog_path)
    document, unreadable = None, None
    try:
        document = status_file.read(path)
    except FileNotFoundError:
        pass
    except PermissionError:
        raise
    except (OSError, ValueError) as exc:  # not one the daemon wrote: its writes are whole, never half
        unreadable = f"its status file cannot be read ({exc})"
    reason = unreadable or status_file.not_running(document)
    running = reason is None
    live = document if running else None
    seconds = status_file.age(document) if document else None
    catalog = catalog_view(catalog_path, config)
    unfinished, destinations = catalog.pop("unfinished"), catalog.pop("destinations")
    return {
        "running": running,
        "not_running_because": reason,
        "status_file": str(path),
        "daemon": _daemon(document, seconds if running else None) if document else None,
        # running: what the daemon records now; not running: what a crash left in progress
        "recordings": _recordings(live, seconds) if live else unfinished,
        "broker": _broker(live, config),
        "delivery": {
            "outbox": catalog["outbox"],
            "events_dropped": (live.get("delivery") or {}).get("events_dropped") if live else None,
            "destinations": destinations,
        },
        "storage": _storage(config, live),
        "catalog": catalog,
    }


def _daemon(document: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    """Who wrote the status file; ``uptime`` and ``age`` only while it runs (``seconds``: the file's age)."""
    fields = ("pid", "phase", "device_id", "firmware_version", "started_at", "written_at", "state")
    out = {key: document.get(key) for key in fields}
    out |= {key: document.get(key) for key in ("input_level", "last_error", "problems")}
    out["age"] = None if seconds is None else round(seconds, 1)
    uptime = document.get("uptime")
    out["uptime"] = None if uptime is None or seconds is None else round(uptime + seconds, 1)
    return out


def _recordings(document: dict[str, Any], seconds: float | None) -> list[dict[str, Any]]:
    """The active recordings the daemon reported; a running one's duration brought up to now."""
    out = []
    for r in document.get("recordings") or []:
        r = dict(r)
        if r.get("state") == "recording" and r.get("duration") is not None and seconds is not None:
            r["duration"] = round(r["duration"] + seconds, 1)
        out.append(r)
    return out


def _broker(live: dict[str, Any] | None, config: cfg.Config) -> dict[str, Any]:
    """The running daemon's broker connection; without one, only whether a broker is configured."""
    url = config.mqtt["url"]
    out = {"url": status_file.redact_text(url) or None}
    unknown = {"state": "unknown" if url else "off", "since": None, "last_error": None, "last_error_at": None}
    if live is not None:
        return out | unknown | (live.get("broker") or {})
    return out | unknown


def _storage(config: cfg.Config, live: dict[str, Any] | None) -> dict[str, Any]:
    """Free space measured now (the running daemon's figure when the spool is not there to measure)."""
    live = live or {}
    spool = Path(live.get("spool") or config.spool["directory"])
    min_free_mb = live.get("min_free_mb", config.spool["min_free_mb"])
    free = total = None
    try:
        usage = shutil.disk_usage(spool)
        free, total = usage.free, usage.total
    except FileNotFoundError:
        if live.get("free_storage_mb") is not None:
            free = int(live["free_storage_mb"] * 1e6)
    return {
        "spool": str(spool),
        "free_bytes": free,
        "total_bytes": total,
        "min_free_mb": min_free_mb,
        "low": None if free is None else free < min_free_mb * 1e6,
        "reserve_bytes": RESERVE_BYTES,
        "reserve_held": Reserve(spool).held,
    }


# -- the catalog, read-only -------------------------------------------------------------------------
def catalog_view(path: Path, config: cfg.Config) -> dict[str, Any]:
    """Counts, recordings left unfinished, and the delivery backlog and health per destination."""
    out: dict[str, Any] = {"path": str(path), "recordings": 0, "by_status": {}, "media_bytes": 0, "outbox": 0}
    out |= {"unfinished": [], "destinations": _destinations([], [], config)}
    try:
        db = _open_read_only(path)
    except sqlite3.DatabaseError as exc:
        out["error"] = f"cannot read it: {exc}"
        return out
    if db is None:
        out["error"] = "no catalog there yet"
        return out
    try:
        db.execute("BEGIN")  # one snapshot for every figure, however the daemon writes meanwhile
        by_status = dict(db.execute("SELECT status, COUNT(*) FROM recordings GROUP BY status").fetchall())
        marks = ", ".join("?" * len(UNFINISHED))
        unfinished = db.execute(
            "SELECT id, name, source, status, state, call_id, start_time FROM recordings "
            f"WHERE status IN ({marks}) ORDER BY date_created",
            UNFINISHED,
        ).fetchall()
        media = db.execute("SELECT COALESCE(SUM(size), 0) FROM recordings WHERE path IS NOT NULL").fetchone()[0]
        backlog = db.execute(
            "SELECT kind, target, COUNT(*), MAX(attempts), MIN(next_attempt), "
            "(SELECT o.last_error FROM outbox o WHERE o.kind = outbox.kind AND o.target = outbox.target "
            "AND o.last_error IS NOT NULL ORDER BY o.next_attempt DESC LIMIT 1) "
            "FROM outbox GROUP BY kind, target"
        ).fetchall()
        uploads = db.execute(
            "SELECT destination, state, last_error, date_updated FROM uploads ORDER BY date_updated"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        out["error"] = f"cannot read it: {exc}"
        return out
    finally:
        db.close()
    out |= {
        "recordings": sum(by_status.values()),
        "by_status": by_status,
        "media_bytes": media,
        "outbox": sum(row[2] for row in backlog),
        "unfinished": [dict(r) for r in unfinished],
        "destinations": _destinations(backlog, uploads, config),
    }
    return out


def _open_read_only(path: Path) -> sqlite3.Connection | None:
    """The catalog without writing a byte to it, or None when there is none.

    While the daemon runs its WAL files exist and SQLite reads through them (``mode=ro``, which
    the daemon's group may do on its 0640 files). With no WAL file the catalog is all in the main
    file and nothing writes it: ``immutable`` reads it without creating WAL files that a reader
    other than the daemon's user would leave behind.
    """
    if not path.exists():  # PermissionError when the folder may not be searched
        return None
    if not os.access(path, os.R_OK):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    wal = Path(f"{path}-wal")
    if not wal.exists():
        tries = ("immutable=1", "mode=ro")
    elif wal.stat().st_size:  # commits only the WAL holds: read through it or not at all
        tries = ("mode=ro",)
    else:
        tries = ("mode=ro", "immutable=1")
    problem: Exception | None = None
    for how in tries:
        try:
            db = sqlite3.connect(f"{path.absolute().as_uri()}?{how}", uri=True, timeout=5.0)
            db.row_factory = sqlite3.Row
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.DatabaseError as exc:
            problem = exc
    if not os.access(path.parent, os.W_OK):  # the WAL's shared memory cannot be made by this user
        raise PermissionError(errno.EACCES, f"Permission denied ({problem})", str(path))
    raise sqlite3.DatabaseError(str(problem))


def _destinations(backlog: list, uploads: list, config: cfg.Config) -> list[dict[str, Any]]:
    """One entry per place things go (the configured upload destinations first): what waits for it, and
    how the latest upload to it went."""
    configured = _configured(config)
    entries: dict[str, dict[str, Any]] = {}

    def entry(target: str) -> dict[str, Any]:
        if target not in entries:
            name = next((n for n, d in configured.items() if d.url == target), None)
            name = name or next((n for n, d in configured.items() if target != "mqtt" and d.covers(target)), None)
            entries[target] = {
                "target": status_file.redact_text(target),
                "name": name,
                "uploads": 0,
                "events": 0,
                "callbacks": 0,
                "attempts": 0,
                "next_attempt_at": None,
                "health": None,
                "last_error": None,
                "last_error_at": None,
                "last_success_at": None,
            }
        return entries[target]

    for destination in configured.values():
        entry(destination.url)
    for kind, target, count, attempts, next_attempt, error in backlog:
        e = entry(target)
        e[_KINDS.get(kind, kind)] += count
        e["attempts"] = max(e["attempts"], attempts or 0)
        if next_attempt:
            e["next_attempt_at"] = min(filter(None, (e["next_attempt_at"], _wall(next_attempt))))
        if error:
            e["last_error"] = status_file.redact_text(error)
    latest: dict[str, str] = {}
    for target, state, error, updated in uploads:  # oldest first: what is left is each one's newest
        e = entry(target)
        latest[target] = state
        if state == "done":
            e["last_success_at"] = updated
        if error:
            e["last_error"], e["last_error_at"] = status_file.redact_text(error), updated
    configured_urls = {d.url for d in configured.values()}
    for target, e in entries.items():
        e["health"] = _health(latest.get(target), e, target in configured_urls)
    return sorted(entries.values(), key=lambda e: (e["name"] is None, e["name"] or "", e["target"]))


#: Outbox kinds as the report counts them.
_KINDS = {"upload": "uploads", "event": "events", "webhook": "callbacks"}


def _health(latest: str | None, e: dict[str, Any], configured: bool) -> str | None:
    """How uploads to a destination fare, from its newest upload row: ``ok`` (it succeeded), ``failing``
    (it failed and will be tried again), ``failed`` (given up for good), ``uploading`` (under way),
    ``waiting`` (queued, not tried yet), ``no uploads yet``; None for a place that takes no uploads (a
    broker's events, a status callback)."""
    if latest == "done":
        return "ok"
    if latest == "pending":
        return "failing"
    if latest in ("uploading", "failed"):
        return latest
    if e["uploads"]:
        return "failing" if e["attempts"] else "waiting"
    return "no uploads yet" if configured else None


def _configured(config: cfg.Config) -> dict[str, Any]:
    """The upload destinations the config names, by name (``Destination``s)."""
    return {name: d for name, d in config.upload_destinations().named.items() if d.url}


# -- the text -----------------------------------------------------------------------------------------
def text(report: dict[str, Any]) -> list[str]:
    lines = []
    d = report["daemon"]
    now = time.time()
    if report["running"]:
        lines.append(
            f"box        running ({d['phase']}): pid {d['pid']}, up {_span(d['uptime'])}, "
            f"firmware {d['firmware_version']}, device {d['device_id']}"
        )
        level = "" if d["input_level"] is None else f"; input level {d['input_level']:g} dBFS"
        lines.append(f"state      {d['state']}{level}; last error: {d['last_error'] or 'none'}")
        for code, problem in (d.get("problems") or {}).items():
            lines.append(f"  problem {code}: {problem}")
        active = report["recordings"]
        lines.append(f"recordings {len(active)} active")
        for r in active:
            duration = "-" if r.get("duration") is None else f"{r['duration']:.1f} s"
            lines.append(
                f"  {r['id']}  {r.get('source') or '-'}  {r['state']}  {duration}  started {r.get('start_time')}"
            )
    else:
        lines.append(f"the box is not running: {report['not_running_because']}")
        left = report["recordings"]
        if left:
            lines.append(f"recordings {len(left)} left in progress (the next start finishes them as recovered)")
            for r in left:
                lines.append(f"  {r['id']}  {r.get('source') or '-'}  {r['status']}  started {r.get('start_time')}")
        else:
            lines.append("recordings none left in progress")
    lines += _broker_lines(report["broker"], now)
    lines += _delivery_lines(report["delivery"], now)
    lines += _storage_lines(report["storage"])
    c = report["catalog"]
    if c.get("error"):
        lines.append(f"catalog    {c['path']}: {c['error']}")
    else:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(c["by_status"].items())) or "none"
        lines.append(
            f"catalog    {_count(c['recordings'], 'recording')}: {counts}; {_bytes(c['media_bytes'])} of media in the spool"
        )
    return lines


def _broker_lines(b: dict[str, Any], now: float) -> list[str]:
    if b["state"] == "off":
        return ["broker     none configured ([mqtt] url)"]
    if b["state"] == "unknown":
        return [f"broker     {b['url']}: not connected (the box is not running)"]
    line = f"broker     {b['url']}: {b['state']} since {_when(b['since'], now)}"
    if b.get("last_error"):
        line += f"; last error {_when(b['last_error_at'], now)}: {b['last_error']}"
    return [line]


def _delivery_lines(delivery: dict[str, Any], now: float) -> list[str]:
    dropped = delivery.get("events_dropped")
    lines = [
        f"delivery   {delivery['outbox']} waiting in the outbox" + (f"; {dropped} events dropped" if dropped else "")
    ]
    for e in delivery["destinations"]:
        name = f" ({e['name']})" if e["name"] else ""
        waiting = [_count(e[k], k[:-1]) for k in ("uploads", "events", "callbacks") if e[k]]
        parts = [", ".join(waiting) + " waiting" if waiting else "nothing waiting"]
        if e["health"]:
            parts.insert(0, e["health"])
        if e["attempts"]:
            parts.append(_count(e["attempts"], "attempt"))
        if e["next_attempt_at"] and waiting:
            parts.append(f"next try {_when(e['next_attempt_at'], now, future=True)}")
        if e["last_success_at"]:
            parts.append(f"last upload {_when(e['last_success_at'], now)}")
        lines.append(f"  {e['target']}{name}: {'; '.join(parts)}")
        if e["last_error"]:
            when = f" {_when(e['last_error_at'], now)}" if e["last_error_at"] else ""
            lines.append(f"    last error{when}: {e['last_error']}")
    return lines


def _storage_lines(s: dict[str, Any]) -> list[str]:
    free = "free space unknown" if s["free_bytes"] is None else f"{_bytes(s['free_bytes'])} free"
    low = "; LOW: recording is refused" if s["low"] else ""
    reserve = f"{_bytes(s['reserve_bytes'])} reserve {'held' if s['reserve_held'] else 'not held'}"
    return [f"storage    {free} in {s['spool']}; recording stops below {s['min_free_mb']:g} MB{low}; {reserve}"]


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _when(stamp: str | None, now: float, future: bool = False) -> str:
    """``2025-05-14T09:31:07.431Z (12 s ago)``; the stamp alone when it does not parse."""
    if not stamp:
        return "-"
    try:
        seconds = now - datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return stamp
    if future:
        return "now" if seconds >= 0 else f"in {_span(-seconds)}"
    return f"{stamp} ({_span(max(0.0, seconds))} ago)"


def _span(seconds: float | None) -> str:
    """
    >>> _span(4.2), _span(185), _span(7300), _span(200000)
    ('4 s', '3 min 5 s', '2 h 1 min', '2 d 7 h')
    """
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _bytes(n: int | float) -> str:
    """
    >>> _bytes(512 * 1024), _bytes(27_479_000_000)
    ('512 KiB', '25.6 GiB')
    """
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _wall(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
