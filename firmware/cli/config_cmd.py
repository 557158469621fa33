"""``edge-recorder config check FILE``, ``config defaults`` and ``config reference``."""

from __future__ import annotations

import argparse
import sys

from .. import config as cfg
from ..daemon.hardware import HardwareError, check_sim
from . import exits


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a config file, print the defaults or the reference")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=type(p))
    check = verbs.add_parser("check", help="validate a config file (exit 78 when it is bad)")
    check.add_argument("file", help="the TOML file")
    check.set_defaults(run=run_check)
    show = verbs.add_parser("defaults", help="print every section and key with its default (TOML)")
    show.set_defaults(run=lambda args: _print(cfg.describe()))
    reference = verbs.add_parser("reference", help="print every key's type, default and meaning (Markdown)")
    reference.set_defaults(run=lambda args: _print(cfg.reference()))


def _print(text: str) -> int:
    sys.stdout.write(text)
    return exits.OK


def run_check(args: argparse.Namespace) -> int:
    try:
        config = cfg.load(args.file)
        check_sim(config)
    except (cfg.ConfigError, HardwareError) as exc:
        return exits.fail(exits.CONFIG, str(exc))
    print(
        f"{args.file}: ok (device id {config.device_id}, capture {config.audio['capture']}, spool {config.spool['directory']})"
    )
    return exits.OK
