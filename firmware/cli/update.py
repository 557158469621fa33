"""``edge-recorder update FILE``: install a signed release bundle beside the running version and switch to it.

The steps and the rule are in ``firmware.update``; this is the command's face. Progress goes to
stderr, the outcome to stdout. A refusal is one line and a sysexits code:
66 (EX_NOINPUT) no bundle or no signature beside it, 65 (EX_DATAERR) a bundle that is not
signed by the box's key, damaged, truncated, tampered with, built for another machine, not newer
than the running version, or whose version cannot use the box's catalog, 78 (EX_CONFIG) no
usable update key on the box or a config the new version rejects, 73 (EX_CANTCREAT) no space
or a new slot that could not be made, 69 (EX_UNAVAILABLE) another update running, the last one
not confirmed or switched back yet, or no slots to update, 77 (EX_NOPERM) not root.

``edge-recorder update --status`` says which version runs, which one is kept, and what became of
the last update: confirmed, pending, or switched back and why (``firmware.update.state``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..update import Reason, Refused, Stage
from ..update.apply import SERVICE, update
from ..update.slots import Layout
from ..update.state import status
from . import exits

EXIT = {
    Reason.MISSING: exits.NOINPUT,
    Reason.NO_KEY: exits.CONFIG,
    Reason.SIGNATURE: exits.DATAERR,
    Reason.TRUNCATED: exits.DATAERR,
    Reason.DAMAGED: exits.DATAERR,
    Reason.TAMPERED: exits.DATAERR,
    Reason.WRONG_MACHINE: exits.DATAERR,
    Reason.NOT_NEWER: exits.DATAERR,
    Reason.CATALOG: exits.DATAERR,
    Reason.CONFIG: exits.CONFIG,
    Reason.NO_SPACE: exits.CANTCREAT,
    Reason.INSTALL: exits.CANTCREAT,
    Reason.BUSY: exits.UNAVAILABLE,
    Reason.NOT_INSTALLED: exits.UNAVAILABLE,
    Reason.PERMISSION: exits.NOPERM,
    Reason.UNCONFIRMED: exits.UNAVAILABLE,
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "update",
        help="install a signed release bundle and switch to it",
        description="Check FILE (a release bundle, edge-recorder-VERSION-ARCH.tar) against its signature "
        "FILE.minisig and the key in /etc/edge-recorder/update.pub, then its manifest and every file in it; "
        "install it into a new slot under /opt/edge-recorder/slots with no network; let the new version check "
        "the box's config and migrate a copy of its catalog; keep a copy of the catalog; switch "
        "/opt/edge-recorder/current to the new slot (the previous one is kept) and restart "
        f"{SERVICE}. Anything refused is said in one line and nothing is switched. The new version confirms the "
        "update once it has recorded healthily for [update] confirm_seconds; until then a crash loop, a failed start "
        "or a reboot switches back to the previous version.",
    )
    p.add_argument("file", type=Path, metavar="FILE", nargs="?", help="the bundle; its signature is FILE.minisig")
    p.add_argument(
        "--status",
        action="store_true",
        help="say which version runs, which one is kept, and whether the last update is confirmed, pending or "
        "switched back (and why); installs nothing",
    )
    p.add_argument("--force", action="store_true", help="install it even if it is not newer than the running version")
    p.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="root file system to update (default /); with another root the service is not restarted, only named",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.status:
        if args.file is not None:
            return exits.fail(exits.USAGE, "--status installs nothing: give no FILE with it")
        current = status(Layout(args.root))
        if current.running is None:
            return exits.fail(exits.UNAVAILABLE, f"{Layout(args.root).top} has no current slot: nothing installed")
        print("\n".join(current.lines()))
        return exits.OK
    if args.file is None:
        return exits.fail(exits.USAGE, "give the bundle FILE to install, or --status")

    def report(stage: Stage, text: str) -> None:
        print(f"edge-recorder update: {text}", file=sys.stderr, flush=True)

    try:
        result = update(args.file, root=args.root, force=args.force, report=report)
    except Refused as refused:
        return exits.fail(EXIT[refused.reason], f"update refused: {refused.message}")
    print(f"edge-recorder {result.version} is current (slot {result.slot}); previous: {result.previous}")
    return exits.OK
