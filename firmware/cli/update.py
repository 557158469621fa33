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

``edge-recorder update --pending [card|inbox|all]`` is what the update units run as root: ``card``
a bundle on the boot partition (``firmware.update.card``; edge-recorder-update-card.service, at
boot), ``inbox`` each request the daemon left in its inbox for an MQTT ``update`` command
(``firmware.update.inbox``; edge-recorder-update.service), each through the same ``update``. Neither
restarts the recorder. It exits 0 when there was nothing to do or everything was installed, else
with the last refusal's code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
from pathlib import Path

from ..update import Reason, Refused, Stage, card, inbox
from ..update.apply import SERVICE, check_room, setting, update
from ..update.history import ID, Step, new_id, record
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
    # a download's (the MQTT update command, in the daemon): listed so that every reason has its code
    Reason.DOWNLOAD: exits.UNAVAILABLE,
    Reason.TOO_LARGE: exits.DATAERR,
    Reason.CANCELLED: exits.UNAVAILABLE,
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
        "--pending",
        nargs="?",
        const="all",
        choices=("all", "card", "inbox"),
        metavar="WHERE",
        help="install what waits: card, a bundle on the boot partition (edge-recorder-*.tar with its .minisig; what "
        "edge-recorder-update-card.service runs at boot); inbox, the bundles the daemon downloaded for MQTT update "
        "commands (what edge-recorder-update.service runs); all (the default), both. It restarts nothing: a running "
        "recorder restarts into the new version by itself once no recording is active",
    )
    p.add_argument(
        "--via",
        choices=("command", "mender"),
        default="command",
        help="who asked for the update, as the box's device.update events say it: command (the default) or "
        "mender (the Mender Update Module)",
    )
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
        if args.file is not None or args.pending is not None:
            return exits.fail(exits.USAGE, "--status installs nothing: give no FILE or --pending with it")
        current = status(Layout(args.root))
        if current.running is None:
            return exits.fail(exits.UNAVAILABLE, f"{Layout(args.root).top} has no current slot: nothing installed")
        print("\n".join(current.lines()))
        return exits.OK
    if args.pending is not None:
        if args.file is not None or args.force or args.via != "command":
            return exits.fail(
                exits.USAGE, "--pending installs what waits on the box: give no FILE, --force or --via with it"
            )
        return pending(args.root, args.pending)
    if args.file is None:
        return exits.fail(exits.USAGE, "give the bundle FILE to install, or --status")

    try:
        result = update(args.file, root=args.root, force=args.force, report=report, via=args.via)
    except Refused as refused:
        return exits.fail(EXIT[refused.reason], f"update refused: {refused.message}")
    print(f"edge-recorder {result.version} is current (slot {result.slot}); previous: {result.previous}")
    return exits.OK


def report(stage: Stage, text: str) -> None:
    print(f"edge-recorder update: {text}", file=sys.stderr, flush=True)


def pending(root: Path, where: str) -> int:
    """Install a bundle from the boot partition and/or each MQTT request in the inbox (``--pending WHERE``).
    Neither restarts the recorder: at boot it starts after this, and a running one restarts into the new
    version by itself once no recording is active (``firmware.update.news``)."""
    box = Layout(root)
    code = exits.OK
    if where in ("all", "card"):
        code = _card(box)
    if where in ("all", "inbox"):
        code = _inbox(box) or code
    return code


def _card(box: Layout) -> int:
    found = card.look([box.on_box(folder) for folder in card.BOOT])
    for bundle, why in found.skipped:
        report(Stage.CHECKING, f"{bundle}: not installed: {why}")
    if found.take is None:
        return exits.OK
    try:
        return _from_card(box, found.take)
    except OSError as exc:  # a card that is full or read-only: said, and the inbox still gets its turn
        report(Stage.CHECKING, f"{found.take}: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return exits.CANTCREAT


def _from_card(box: Layout, bundle: Path) -> int:
    report(Stage.CHECKING, f"{bundle}: a bundle on the boot partition")
    try:
        result = update(bundle, root=box.root, report=report, via="boot", restart="no")
    except Refused as refused:
        final = refused.reason not in (Reason.UNCONFIRMED, Reason.BUSY, Reason.NO_SPACE)
        card.refused(
            bundle,
            f"{bundle.name} was not installed: {refused.message}\nNothing on the box was changed. "
            + (
                "Replace the bundle (and its .minisig) and start the box again."
                if final
                else "It is tried again at the next start of the box."
            ),
            final=final,
        )
        report(Stage.CHECKING, f"update refused: {refused.message}")
        return EXIT[refused.reason]
    card.installed(
        bundle,
        f"edge-recorder {result.version} is installed from {bundle.name} (slot {result.slot}); it replaced "
        f"{result.previous}, which is kept.\nIt is confirmed once it has recorded healthily for a few minutes; "
        "until then a crash loop, a failed start or a restart of the box switches back to "
        f"{result.previous}. edge-recorder update --status on the box tells which.",
    )
    print(f"edge-recorder {result.version} is current (slot {result.slot}); previous: {result.previous}")
    return exits.OK


def _inbox(box: Layout) -> int:
    folder = box.on_box(inbox.INBOX)
    try:
        opened = inbox.Inbox.open(folder)
    except inbox.Inadmissible as exc:
        report(Stage.CHECKING, f"update refused: {exc}")
        _refused(box, None, str(exc), Reason.DAMAGED)
        # removed (a link is unlinked, never followed): the path unit would start this again and again
        with contextlib.suppress(OSError):
            folder.unlink()
        return exits.DATAERR
    if opened is None:
        return exits.OK
    code = exits.OK
    incoming = box.top / inbox.INCOMING
    with opened, box.locked(wait=True):
        inbox.clear(incoming)  # left by a run that was cut short
        for name in opened.pending():
            try:
                code = _from_inbox(box, opened, name, incoming) or code
            finally:
                opened.discard(name)
                inbox.clear(incoming)
    return code


def _from_inbox(box: Layout, opened: inbox.Inbox, name: str, incoming: Path) -> int:
    size = opened.size_of(name)
    try:
        check_room(box, 3 * size, size)  # root's copy, then the update's own copy and the bundle's files
        request, bundle = opened.admit(name, incoming)
    except inbox.Inadmissible as exc:
        report(Stage.CHECKING, f"update refused: {exc}")
        _refused(box, exc.request, str(exc), Reason.DAMAGED, name)
        return exits.DATAERR
    except Refused as refused:
        report(Stage.CHECKING, f"update refused: {refused.message}")
        _refused(box, None, refused.message, refused.reason, name)
        return EXIT[refused.reason]
    except OSError as exc:
        full = exc.errno == errno.ENOSPC
        message = f"{name}: {exc.strerror or exc}: nothing was changed"
        report(Stage.CHECKING, f"update refused: {message}")
        _refused(box, None, message, Reason.NO_SPACE if full else Reason.INSTALL, name)
        return exits.CANTCREAT
    opened.discard(name)  # the copy is root's now
    force = request.force and bool(setting(box, "update", "allow_downgrade"))
    if request.force and not force:
        report(Stage.CHECKING, "force is ignored: [update] allow_downgrade is not set in the box's config")
    report(Stage.CHECKING, f"{request.name}: an MQTT update command's bundle (update {request.id})")
    try:
        result = update(
            bundle,
            root=box.root,
            force=force,
            report=report,
            via="mqtt",
            update_id=request.id,
            request_id=request.request_id,
            restart="no",
        )
    except Refused as refused:
        report(Stage.CHECKING, f"update refused: {refused.message}")
        return EXIT[refused.reason]
    print(f"edge-recorder {result.version} is current (slot {result.slot}); previous: {result.previous}")
    return exits.OK


def _refused(box: Layout, request: inbox.Request | None, message: str, reason: Reason, name: str = "") -> None:
    """A request refused before ``update`` saw it, in the history under its id (the file's name's, when the
    request could not be read)."""
    stem = name.removesuffix(inbox.SUFFIX)
    update_id = request.id if request else stem if ID.fullmatch(stem) else new_id()
    step = Step(
        update_id, "refused", via="mqtt", message=message, reason=reason.value,
        request_id=request.request_id if request else "",
    )  # fmt: skip
    try:
        record(box, step)
    except OSError as exc:
        report(Stage.CHECKING, f"the update history was not written: {exc.strerror or exc}")
