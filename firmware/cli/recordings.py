"""``edge-recorder recordings list|show|export|delete``: the catalog from the command line."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from .. import config as cfg
from ..catalog import Catalog, CatalogError
from ..cloudevents import CloudEvents, Timebase
from ..control import Control, ControlError, Offline
from ..delivery.routes import Routes
from ..journal import Journal, public
from . import exits
from .run import add_config_argument

COLUMNS = ("id", "status", "end_reason", "source", "start_time", "duration", "size")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recordings", help="list, show, export or delete recordings in the catalog")
    add_config_argument(p)
    p.add_argument("--state-dir", type=Path, help="the spool and catalog are here (as for run --state-dir)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=type(p))
    ls = verbs.add_parser("list", help="recordings, newest first")
    ls.add_argument("--status", help="only this status (in-progress, completed, absent, failed, deleted...)")
    ls.add_argument("--call-id", help="only this call")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="JSON for scripts")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="every field of one recording (JSON)")
    show.add_argument("id")
    show.set_defaults(run=run_show)
    export = verbs.add_parser("export", help="copy a recording's media file out")
    export.add_argument("id")
    export.add_argument("dest", type=Path, help="file or directory to copy to")
    export.set_defaults(run=run_export)
    delete = verbs.add_parser(
        "delete",
        help="delete a finished recording's media; its metadata stays as deleted",
        description="Delete a finished recording's media; its metadata stay 40 days with status deleted. The "
        "deletion is reported as recording.deleted (through the running box's MQTT and webhooks) and audited. "
        "A recording whose upload is not confirmed yet is refused: its media would be lost.",
    )
    delete.add_argument("id")
    delete.add_argument(
        "--force", action="store_true", help="delete also when its upload is not confirmed: the upload is cancelled"
    )
    delete.set_defaults(run=run_delete)


def _catalog(args: argparse.Namespace) -> Catalog:
    if args.state_dir:
        path = args.state_dir / "catalog.sqlite3"
    else:
        path = Path(cfg.load(args.config).catalog["path"])
    if not path.exists():
        raise CatalogError(f"{path}: no catalog there yet")
    return Catalog(path)


def _with_catalog(fn):
    def wrapped(args: argparse.Namespace) -> int:
        try:
            catalog = _catalog(args)
        except cfg.ConfigError as exc:
            return exits.fail(exits.CONFIG, str(exc))
        except CatalogError as exc:
            return exits.fail(exits.NOINPUT, str(exc))
        try:
            return fn(args, catalog)
        except LookupError as exc:
            return exits.fail(exits.NOINPUT, str(exc.args[0]))
        finally:
            catalog.close()

    return wrapped


@_with_catalog
def run_list(args: argparse.Namespace, catalog: Catalog) -> int:
    rows = catalog.list(status=args.status, call_id=args.call_id, limit=args.limit)
    if args.json:
        json.dump([public(r, uploads=catalog.uploads(r["id"])) for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return exits.OK
    if not rows:
        print("no recordings")
        return exits.OK
    table = [COLUMNS] + [tuple(_cell(r.get(c)) for c in COLUMNS) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return exits.OK


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _get(catalog: Catalog, rid: str) -> dict:
    row = catalog.get(rid)
    if row is None:
        raise LookupError(f"no recording {rid!r} in the catalog")
    return row


@_with_catalog
def run_show(args: argparse.Namespace, catalog: Catalog) -> int:
    row = _get(catalog, args.id)
    shown = public(row, uploads=catalog.uploads(row["id"])) | {"options": row["options"], "path": row["path"]}
    json.dump(shown, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return exits.OK


@_with_catalog
def run_export(args: argparse.Namespace, catalog: Catalog) -> int:
    row = _get(catalog, args.id)
    if not row.get("path") or not Path(row["path"]).exists():
        return exits.fail(exits.NOINPUT, f"{args.id} has no media file (status {row['status']})")
    dest = args.dest / Path(row["path"]).name if args.dest.is_dir() else args.dest
    try:
        shutil.copyfile(row["path"], dest)
    except OSError as exc:
        return exits.fail(exits.CANTCREAT, f"{dest}: {exc.strerror}")
    print(dest)
    return exits.OK


@_with_catalog
def run_delete(args: argparse.Namespace, catalog: Catalog) -> int:
    """Through the control API, as the box's front ends: the same rule, audit row and recording.deleted, which
    the running box's delivery picks up from the outbox."""
    try:
        config = cfg.load(args.config)
    except cfg.ConfigError as exc:
        return exits.fail(exits.CONFIG, str(exc))
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
        row = Control(Offline(), journal).delete(args.id, force=args.force, actor="cli")
    except ControlError as exc:
        return exits.fail(exits.USAGE, str(exc))
    cancelled = reported[-1]["data"]["cancelled_uploads"] if reported else []
    note = "; ".join(f"upload to {u['destination']} ({u['state']}) cancelled" for u in cancelled)
    print(f"{row['id']}: deleted (metadata kept 40 days){'; ' + note if note else ''}")
    return exits.OK
