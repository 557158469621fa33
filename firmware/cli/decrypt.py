"""``edge-recorder decrypt``: an encrypted recording (``.era``) back to audio, on the central side."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..core.options import Format
from ..media.encrypted import EncryptedFileError, WrongIdentity, decrypt_to_file, decrypt_to_wav, requested
from . import exits

log = logging.getLogger("edge-recorder.decrypt")

#: The file was torn by a crash: the audio up to the tear was written, a warning says where.
TORN = 3
#: The identity is not the one the file was encrypted to.
NOPERM = exits.NOPERM
#: What the output can be: the formats the box records in, chosen by -o's extension or --format.
FORMATS = tuple(f.value for f in Format)

_EPILOG = f"""\
exit status:
  0   decrypted; the recording is complete
  {TORN}   decrypted up to a tear (a crash while recording): everything before it is good
  64  usage error (an output name that is not .wav or .mp3, or that --format or --raw contradicts)
  65  damaged or altered file (the segment is named), or not an encrypted recording
  66  the recording or the identity file is missing
  73  the output cannot be written, or exists (use --force)
  {NOPERM}  the identity cannot open this file (it was encrypted to another recipient)
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decrypt",
        help="decrypt a recording encrypted at rest (.era)",
        description="Decrypt a recording the box encrypted at rest, verify every segment, and write it "
        "in the format, sample rate and trim it was recorded with (or as given here).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="the encrypted recording, <id>.era")
    p.add_argument(
        "-i", "--identity", required=True, help="age identity file (age-keygen output), or AGE-SECRET-KEY-1..."
    )
    p.add_argument(
        "-o",
        "--out",
        type=Path,
        help="output file, .wav or .mp3: its extension chooses the format (default: FILE with the format's extension)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: the recording's); with -o, its extension decides and --format must agree",
    )
    p.add_argument("--sample-rate", type=int, choices=(8000, 16000), help="output rate (default: the recording's)")
    p.add_argument(
        "--raw",
        action="store_true",
        help="everything recorded, as a WAV at the input rate: no trim, no conversion (-o must end .wav)",
    )
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    problem = _output_problem(args)
    if problem:
        return exits.fail(exits.USAGE, problem)
    if not args.file.exists():
        return exits.fail(exits.NOINPUT, f"{args.file}: no such file")
    try:
        fmt = _format(args)
        out = args.out or args.file.with_suffix(f".{fmt}")
        if out.resolve() == args.file.resolve() or (out.exists() and not args.force):
            return exits.fail(exits.CANTCREAT, f"{out}: exists (use --force to replace it, or -o)")
        if args.raw:
            done = decrypt_to_wav(args.file, args.identity, out)
        else:
            done = decrypt_to_file(args.file, args.identity, out, fmt, args.sample_rate)
    except FileNotFoundError as exc:
        return exits.fail(exits.NOINPUT, str(exc))
    except WrongIdentity as exc:
        return exits.fail(NOPERM, str(exc))
    except EncryptedFileError as exc:  # damaged (names the segment), or not an encrypted recording
        return exits.fail(exits.DATAERR, str(exc))
    except OSError as exc:
        return exits.fail(exits.CANTCREAT, f"{exc.filename or out}: {exc.strerror}")
    if done.torn:
        log.warning("%s: torn: %s; %d segment(s) decrypted into %s", args.file, done.torn, done.segments, out)
        return TORN
    log.info("%s: %d segment(s), %d frame(s) -> %s", args.file, done.segments, done.frames, out)
    return exits.OK


def _output_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with -o: a name that is not a format's, or not the one --format or --raw asks for."""
    if args.out is None:
        return None
    accepted = " or ".join(f".{f}" for f in FORMATS)
    if args.out.is_dir():
        return f"{args.out}: is a directory; -o takes a file name ending {accepted}"
    ext = args.out.suffix.lower()[1:]
    if ext not in FORMATS:
        named = f"a .{ext} file" if ext else "a file without an extension"
        return f"{args.out}: cannot write {named}; name the output {accepted}"
    if args.raw and ext != "wav":
        return f"--raw writes a WAV, and {args.out} is a .{ext} name: name it .wav"
    if args.format and args.format != ext:
        return f"--format {args.format} and -o {args.out} (a .{ext} name) disagree: give one of them"
    return None


def _format(args: argparse.Namespace) -> str:
    """What to write: a WAV for --raw, else what -o's name says, else --format, else what the recording asked."""
    if args.raw:
        return "wav"
    if args.out is not None:
        return args.out.suffix.lower()[1:]
    return args.format or requested(args.file, args.identity).get("format", "wav")
