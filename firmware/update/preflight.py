"""What a new version checks on the box's catalog before an update switches to it.

The running version's updater runs this module with the NEW slot's interpreter,

    /opt/edge-recorder/slots/NEW/bin/python -m firmware.update.preflight COPY

on a copy of the box's catalog, so the check is the new version's own code: it opens the copy
as the new daemon will open the catalog at its start (``Catalog``: every migration the copy
lacks, in order, one transaction each), then asks SQLite for an integrity check. One line on
stdout when the copy migrated, one line on stderr and exit status 65 when it did not. The
module path, the argument and the exit status are a contract between versions: keep them.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from ..catalog import Catalog, CatalogError

DATAERR = 65  # sysexits.h, as firmware/cli/exits.py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware.update.preflight", description="Migrate a copy of a catalog as this version would."
    )
    parser.add_argument("copy", type=Path, help="a copy of the box's catalog (it is changed)")
    args = parser.parse_args(argv)
    if not args.copy.is_file():
        print(f"preflight: no such catalog copy: {args.copy}", file=sys.stderr)
        return DATAERR
    try:
        with sqlite3.connect(args.copy) as db:
            before = db.execute("PRAGMA user_version").fetchone()[0]
        db.close()
        catalog = Catalog(args.copy)
        try:
            after, integrity = catalog.version, catalog.integrity()
        finally:
            catalog.close()
    except (CatalogError, sqlite3.Error) as exc:
        print(f"the catalog does not migrate: {exc}", file=sys.stderr)
        return DATAERR
    if integrity != "ok":
        print(f"the migrated catalog fails SQLite's integrity check: {integrity}", file=sys.stderr)
        return DATAERR
    print(f"catalog: schema {before} -> {after}, integrity ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
