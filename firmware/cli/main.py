"""Entry point of the ``edge-recorder`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from .. import __version__
from . import config_cmd, decrypt, demo, devices, doctor, exits, provision, receive, record, recordings, run


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with EX_USAGE (64), as the other errors follow sysexits."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(exits.USAGE, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edge-recorder", description="Firmware of the edge-recorder call-recording appliance.")
    p.add_argument("--version", action="version", version=f"edge-recorder {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="more log detail on stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    run.add_parser(sub)
    record.add_parser(sub)
    demo.add_parser(sub)
    config_cmd.add_parser(sub)
    recordings.add_parser(sub)
    devices.add_parser(sub)
    doctor.add_parser(sub)
    receive.add_parser(sub)
    decrypt.add_parser(sub)
    provision.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
