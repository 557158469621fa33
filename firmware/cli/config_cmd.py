"""``edge-recorder config check FILE``, ``config defaults`` and ``config reference``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import TextIO

from .. import config as cfg
from ..daemon.hardware import HardwareError, check_sim
from ..findings import Finding
from ..media.encrypted import check_recipient
from . import exits


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a config file, print the defaults or the reference")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=type(p))
    check = verbs.add_parser(
        "check",
        help="validate a config file: every problem at once, each at its line (exit 78 when it is bad)",
        description="Check a config file as the box will: every key and every rule between keys, all problems "
        "reported at once with the line, a caret and a hint for the usual causes (curly quotes, True for true, "
        "text without quotes, a file saved as rich text or under a name with a hidden .txt). Warnings (a file "
        "that sets nothing) do not fail the check. Exit status 0 good, 78 bad.",
    )
    check.add_argument("file", help="the TOML file")
    check.add_argument("--json", action="store_true", help="the verdict, every problem and warning as JSON")
    check.set_defaults(run=run_check)
    show = verbs.add_parser("defaults", help="print every section and key with its default (TOML)")
    show.set_defaults(run=lambda args: _print(cfg.describe()))
    reference = verbs.add_parser("reference", help="print every key's type, default and meaning (Markdown)")
    reference.set_defaults(run=lambda args: _print(cfg.reference()))


def _print(text: str) -> int:
    sys.stdout.write(text)
    return exits.OK


def run_check(args: argparse.Namespace) -> int:
    config, findings = cfg.check_file(args.file)
    if config is not None:
        try:
            check_sim(config)
        except HardwareError as exc:
            findings.append(Finding(args.file, str(exc)))
            config = None
    if config is not None and config.encryption["public_key"]:
        try:  # as the box reads it at start, where a bad key refuses every recording
            check_recipient(config.encryption["public_key"])
        except ValueError as exc:
            findings.append(Finding(args.file, str(exc), "encryption", "public_key", config.encryption["public_key"]))
            config = None
    if args.json:
        write_json(args.file, config is not None, findings)
        return exits.OK if config is not None else exits.CONFIG
    report(findings)
    if config is None:
        errors = sum(not f.warning for f in findings)
        return exits.fail(
            exits.CONFIG, f"{args.file}: {errors} problem{'s' if errors != 1 else ''}; the box would refuse it"
        )
    print(
        f"{args.file}: ok (device id {config.device_id}, capture {config.audio['capture']}, spool {config.spool['directory']})"
    )
    return exits.OK


def write_json(file: str | None, good: bool, findings: Iterable[Finding], extra: Iterable[dict] = ()) -> None:
    """The verdict on ``file``, its errors (``extra`` ones after them) and warnings, as JSON on stdout."""
    findings = list(findings)
    report = {
        "file": file,
        "good": good,
        "errors": [f.as_dict() for f in findings if not f.warning] + list(extra),
        "warnings": [f.as_dict() for f in findings if f.warning],
    }
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def report(findings: Iterable[Finding], out: TextIO | None = None) -> None:
    """Every problem, then every warning, each with its line as written, a caret and a hint."""
    out = out or sys.stderr
    for finding in sorted(findings, key=lambda f: f.warning):
        first, *rest = finding.lines()
        out.write("\n".join([f"edge-recorder: {'warning' if finding.warning else 'error'}: {first}", *rest]) + "\n")


def fail(exc: cfg.ConfigError) -> int:
    """A config the box cannot use: every problem in it, exit 78 (EX_CONFIG)."""
    report(exc.findings)
    return exits.CONFIG
