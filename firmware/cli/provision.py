"""``edge-recorder provision``: apply the installer's edge-recorder.toml from the boot partition.

Run at boot by ``edge-recorder-provision.service`` (systemd/), before the daemon,
when the file is there; see ``firmware.provision`` for what happens to it.
Exit status: 0 applied or nothing to do, 78 (EX_CONFIG) the file was rejected,
73 (EX_CANTCREAT) it could not be installed or not removed from the boot partition.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import provision
from ..findings import Finding
from . import exits
from .config_cmd import report, write_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "provision",
        help=f"apply {provision.REQUEST} from the boot partition (first boot)",
        description=f"Check {provision.REQUEST} (and the files in {provision.FILES_DIR}/ beside it) on the boot "
        f"partition; if good, install it as {provision.CONFIG_DIR}/config.toml and remove it from the boot "
        f"partition; if not, rename it {provision.REJECTED} with {provision.ERROR_TEXT} beside it, keep the "
        f"running config, and leave {provision.MARKER} for the daemon to report. Exit status 78 when rejected.",
    )
    p.add_argument(
        "--boot",
        action="append",
        type=Path,
        metavar="DIR",
        help="where the boot partition is mounted; repeat for fallbacks, the first holding the file wins "
        "(default: " + ", then ".join(map(str, provision.BOOT_DIRS)) + ")",
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        help="root file system to provision (default /; another for image builds and tests)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="only check, as on a computer with the card before it goes into the box: the same checks, "
        "nothing written, renamed or removed (exit 0 good, 78 with the problem, 66 no file). As on the first "
        f"boot of a fresh box, a file the config names under {provision.CONFIG_DIR} must be in "
        f"{provision.FILES_DIR}/ on the card: this computer's {provision.CONFIG_DIR} (or the one under --root) "
        "is not read; other paths are looked up under --root",
    )
    p.add_argument("--json", action="store_true", help="with --check: the verdict, every problem and warning as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    boot_dirs = args.boot or list(provision.BOOT_DIRS)
    if args.check:
        return check(boot_dirs, args.root, as_json=args.json)
    result = provision.provision(boot_dirs, args.root)
    outcome, problem = result.outcome, result.problem
    if outcome is provision.Outcome.NOTHING:
        print(f"no {provision.REQUEST} in {' or '.join(map(str, boot_dirs))}: nothing to do")
        return exits.OK
    if outcome is provision.Outcome.REJECTED:
        assert problem is not None and result.request is not None
        report(result.problems, sys.stderr)
        return exits.fail(
            exits.CONFIG,
            f"{provision.REQUEST} not applied, the box keeps its configuration "
            f"(see {result.request.with_name(provision.ERROR_TEXT)})",
        )
    if outcome is provision.Outcome.FAILED:
        assert problem is not None
        return exits.fail(exits.CANTCREAT, problem.message)
    names = ", ".join(p.name for p in result.installed)
    if problem is not None:
        print(f"{result.request}: applied ({names} in {provision.CONFIG_DIR})")
        return exits.fail(exits.CANTCREAT, problem.message)
    report(result.problems, sys.stderr)
    print(f"{result.request}: applied ({names} in {provision.CONFIG_DIR}), removed from the boot partition")
    print(f"MQTT commands: {result.commands}")
    return exits.OK


def check(boot_dirs: list[Path], root: Path, as_json: bool = False) -> int:
    request = provision.find_request(boot_dirs)
    if request is None:
        near = provision.find_misnamed(boot_dirs)
        if near is None:
            if as_json:
                return _json(None, False, [], "no_file")
            return exits.fail(exits.NOINPUT, f"no {provision.REQUEST} in {' or '.join(map(str, boot_dirs))}")
        problems: tuple[Finding, ...] = (provision.misnamed_problem(near),)
        if as_json:
            return _json(near, False, problems)
        report(problems, sys.stderr)
        return exits.fail(exits.CONFIG, f"{near}: the box would not read it")
    try:
        checked = provision.check(request.parent, root, fresh_box=True)
    except provision.Rejected as exc:
        if as_json:
            return _json(request, False, exc.problems)
        report(exc.problems, sys.stderr)
        errors = sum(not p.warning for p in exc.problems)
        return exits.fail(
            exits.CONFIG, f"{errors} problem{'s' if errors != 1 else ''}: the box would refuse {provision.REQUEST}"
        )
    if as_json:
        return _json(request, True, checked.warnings, files=["config.toml", *sorted(checked.files)])
    report(checked.warnings, sys.stderr)
    names = ", ".join(["config.toml", *sorted(checked.files)])
    print(f"{request}: good; at the first boot the box installs {names} in {provision.CONFIG_DIR}")
    print(f"MQTT commands: {provision.command_mode(checked)}")
    return exits.OK


def _json(request: Path | None, good: bool, problems: tuple[Finding, ...], code: str = "") -> int:
    missing = [{"severity": "error", "message": f"no {provision.REQUEST} found"}] if code == "no_file" else []
    write_json(str(request) if request else None, good, problems, missing)
    if code == "no_file":
        return exits.NOINPUT
    return exits.OK if good else exits.CONFIG
