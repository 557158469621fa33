"""Entry point of the ``edge-recorder`` command."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import traceback

from .. import __version__
from . import (
    config_cmd,
    decrypt,
    demo,
    devices,
    doctor,
    exits,
    provision,
    receive,
    record,
    recordings,
    run,
    status,
    update,
)
from .access import os_error, permission_denied


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
    status.add_parser(sub)
    devices.add_parser(sub)
    doctor.add_parser(sub)
    receive.add_parser(sub)
    decrypt.add_parser(sub)
    provision.add_parser(sub)
    update.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; whatever it raises ends in one line and a sysexits code, a traceback only with -v (and
    always for ``run``, the daemon, whose stderr is the journal: a bug there is read from its traceback)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    def stdout_closed() -> bool:
        """Whether the reader of stdout went away (a pipe whose other end is closed polls as an error)."""
        try:
            poll = select.poll()
            poll.register(sys.stdout.fileno(), select.POLLOUT)
        except (AttributeError, OSError, ValueError):  # not a file descriptor (a test's StringIO)
            return False
        return any(events & select.POLLERR for _, events in poll.poll(0))

    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError as exc:
        if not stdout_closed():
            return exits.fail(exits.CANTCREAT, os_error(exc))
        # `edge-recorder doctor | head -1`: end quietly, as a program that SIGPIPE ends does; what is still
        # buffered goes nowhere rather than raising again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except PermissionError as exc:
        return exits.fail(exits.NOPERM, permission_denied(exc, argv))
    except OSError as exc:  # a path that is missing, or cannot be written
        return exits.fail(exits.NOINPUT if isinstance(exc, FileNotFoundError) else exits.CANTCREAT, os_error(exc))
    except Exception as exc:  # a bug: said in one line, the traceback with -v
        if args.verbose or args.command == "run":
            traceback.print_exc()
            return exits.fail(exits.SOFTWARE, f"unexpected {type(exc).__name__} (a bug): the traceback is above")
        said = " ".join(str(exc).split())  # one line, whatever the exception's text holds
        return exits.fail(
            exits.SOFTWARE,
            f"unexpected {type(exc).__name__}: {said} (a bug); rerun with -v for the traceback: "
            f"edge-recorder -v {args.command} ...",
        )


if __name__ == "__main__":
    sys.exit(main())
