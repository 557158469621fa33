"""``edge-recorder record``: the core, offline, on an audio file."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import config as cfg
from ..cloudevents import CloudEvents, Timebase
from ..core import (
    Audio,
    EndReason,
    InputLayout,
    LayoutError,
    OptionError,
    RecordingOptions,
    Rejected,
    Session,
    SessionRules,
    Start,
)
from ..core.options import OPTION_HELP, accepted
from ..media.source import MAX_RATE, MIN_RATE, AudioFile, InputError, Unreadable
from ..media.synth import dtmf_tone, mix
from ..spool import Takes, WriteFailed
from . import exits, timeline

log = logging.getLogger("edge-recorder.record")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record",
        help="run the recording core on an audio file",
        description="Record from an audio file with the same recording session the box runs. Events go to "
        "stdout as CloudEvents JSON lines, logs to stderr. Without a start or button action, and without a "
        "[dtmf] start sequence or a [call] auto_record in --config, recording starts at 0 and runs to the end.",
        epilog=timeline.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        type=Path,
        help=f"an audio file (WAV or any libsndfile format): 1 or 2 channels, {MIN_RATE} to {MAX_RATE} Hz",
    )
    p.add_argument(
        "-o", "--out", type=Path, default=Path("recordings"), help="directory for the files (default ./recordings)"
    )
    p.add_argument(
        "--inbound-channel",
        type=int,
        default=0,
        choices=(0, 1),
        help="input channel with the inbound track (2-channel input; default 0)",
    )
    p.add_argument(
        "--outbound-channel",
        type=int,
        default=None,
        choices=(0, 1),
        help="input channel with the outbound track (default: the other one)",
    )
    p.add_argument(
        "--at",
        action="append",
        default=[],
        metavar="SECONDS=ACTION",
        help="a control at a time in the input, e.g. 1.5=start, 4=pause:skip, 2=key:#",
    )
    p.add_argument("--timeline", type=Path, help="a file of 'SECONDS ACTION' lines")
    p.add_argument(
        "--config",
        type=Path,
        help="a box's config file: its [dtmf] key sequences and [call] rules apply as on the box, and its "
        "[recording] options are the defaults of the options below",
    )
    p.add_argument("--device-id", default="offline", help="device id in event sources (default offline)")
    p.add_argument("--start-time", help="wall-clock time of the input's first sample, RFC 3339 (default now)")
    opts = p.add_argument_group(
        "recording options ([recording] in docs/configuration.md)",
        "The box's start options, checked as the box checks them (named choices in any case).\n"
        "This command uploads nothing and calls no one: --destination and the --status-callback\n"
        "options are checked, then left unused.",
    )
    defaults = RecordingOptions().to_dict()
    for f in fields(RecordingOptions):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "beep":
            opts.add_argument(
                flag, dest=f.name, action="store_const", const=True, default=None, help=_option_help(f.name, "off")
            )
        else:
            opts.add_argument(flag, dest=f.name, default=None, help=_option_help(f.name, _shown(defaults[f.name])))
    p.set_defaults(run=run)


def _option_help(name: str, default: str) -> str:
    """A start option's help: what it means, what it accepts (its parser's words) and its default."""
    accepts = "" if name == "beep" else f"; {accepted(name)}"
    return f"{OPTION_HELP[name]}{accepts} (default {default})".replace("%", "%%")


def _shown(value) -> str:
    """A default as it would be typed after the flag."""
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else '""'


def _options(args: argparse.Namespace, defaults: RecordingOptions | None) -> RecordingOptions:
    given = {f.name: getattr(args, f.name) for f in fields(RecordingOptions) if getattr(args, f.name) is not None}
    return RecordingOptions.from_mapping(given, defaults)


def run(args: argparse.Namespace) -> int:
    rules, defaults = SessionRules(), None
    if args.config:
        try:
            config = cfg.load(args.config)
        except cfg.ConfigError as exc:
            return exits.fail(exits.CONFIG, str(exc))
        rules, defaults = config.session_rules(), config.recording
    try:
        options = _options(args, defaults)
        entries = [timeline.parse_entry(text) for text in args.at]
        if args.timeline:
            entries += timeline.read_file(args.timeline)
        origin = datetime.fromisoformat(args.start_time) if args.start_time else datetime.now(UTC)
        if origin.tzinfo is None:
            origin = origin.replace(tzinfo=UTC)
    except (OptionError, timeline.TimelineError) as exc:
        return exits.fail(exits.USAGE, str(exc))
    except FileNotFoundError as exc:
        return exits.fail(exits.NOINPUT, f"--timeline {exc.filename}: no such file")
    except ValueError as exc:
        return exits.fail(exits.USAGE, f"--start-time {args.start_time!r}: {exc}")
    try:
        source = AudioFile(args.input, convert_to=options.sample_rate)
    except Unreadable as exc:
        return exits.fail(exits.NOINPUT, str(exc))
    except InputError as exc:
        return exits.fail(exits.DATAERR, str(exc))
    with source:
        if source.file_rate != source.rate:
            log.info("input is %d Hz; converting to %d Hz", source.file_rate, source.rate)
        outbound = args.outbound_channel if args.outbound_channel is not None else 1 - args.inbound_channel
        try:
            layout = InputLayout(source.rate, source.channels, args.inbound_channel, outbound)
            layout.check(options)
        except LayoutError as exc:
            return exits.fail(exits.USAGE, f"{args.input}: {exc}")
        try:
            return _record(args, options, rules, entries, source, layout, origin)
        except InputError as exc:
            return exits.fail(exits.DATAERR, str(exc))
        except OSError as exc:
            return exits.fail(exits.CANTCREAT, f"{exc.filename or args.out}: {exc.strerror}")


def _record(args, options, rules, entries, source, layout, origin) -> int:
    rate = source.rate
    core = Session(layout, options=options, rules=rules)
    takes = Takes(args.out, rate)
    cloud = CloudEvents(args.device_id, Timebase(origin, rate))
    presses: list[timeline.KeyPress] = []

    def start(name: str, at: int) -> Start:
        return Start(options if not name else RecordingOptions.from_mapping({"name": name}, options), "cli", at=at)

    if rules.detect != "hook" and any(e.action == "hook" for e in entries):
        log.warning("hook actions do nothing here: they need --config with a hook switch ([call] detect)")
    late = [e for e in entries if e.seconds > source.duration]
    if late:
        log.warning("%d timeline action(s) after the end of the input (%.2f s) do nothing", len(late), source.duration)
    triggered = "start" in rules.sequences or (rules.auto_record != "none" and rules.detect != "none")
    if not triggered and not any(e.action in ("start", "button") for e in entries):
        entries.insert(0, timeline.Entry(0.0, "start", ()))
    for entry in sorted(entries, key=lambda e: e.seconds):
        control = timeline.to_control(
            entry, round(entry.seconds * rate), "inbound" if layout.separable else "both", start
        )
        if isinstance(control, timeline.KeyPress):
            presses.append(control)
        else:
            emit(core.send(control), takes, cloud)

    channel_of = {"inbound": layout.inbound_channel, "outbound": layout.outbound_channel, "both": None}
    tones = [
        (round(p.seconds * rate), dtmf_tone(p.key, rate), channel_of[p.track] if layout.separable else None)
        for p in presses
    ]
    position = 0
    with tqdm(total=round(source.duration, 1), unit="s", disable=not sys.stderr.isatty(), leave=False) as bar:
        try:
            for piece in source.pieces():
                if tones:
                    piece = piece.copy()
                    for at, tone, channel in tones:
                        mix(piece, tone, at - position, channel)
                position += len(piece)
                emit(core.feed(piece), takes, cloud)
                bar.update(round(len(piece) / rate, 1))
        except InputError:
            # Damaged audio ends what records as the box ends a recording it cannot go on with: failed,
            # its file made from the audio before the damage (no part file is left; nothing recovers it here).
            emit(core.close(EndReason.ERROR), takes, cloud)
            raise
        except WriteFailed as exc:  # the output's disk is full: end what records, as far as it still can
            try:
                emit(core.close(EndReason.ERROR), takes, cloud)
            except (OSError, WriteFailed, RuntimeError):  # RuntimeError: libsndfile's, opening the finished file
                return exits.fail(
                    exits.CANTCREAT, f"{args.out}: {exc.reason}; the audio recorded so far stays in its .part file"
                )
            return exits.fail(exits.CANTCREAT, f"{args.out}: {exc.reason}; the recording ends at its last good sample")
    emit(core.close(EndReason.CALL_END), takes, cloud)
    return exits.OK


def emit(events, takes: Takes, cloud: CloudEvents) -> None:
    """Hand a batch of core events to the spool and print them. A write that fails does not drop the rest
    of the batch (a recording's end may be in it): it is raised once all were handled."""
    failed: WriteFailed | None = None
    for event in events:
        try:
            take = takes.handle(event)
        except WriteFailed as exc:
            failed = failed or exc
            continue
        if take is not None:
            _print(cloud.finished(take))
            if take.finished.discarded:
                log.info("%s: %s", take.finished.recording.name, take.finished.discarded)
            elif take.written is None and take.error is None:
                log.info("%s: %s; no file written", take.finished.recording.name, take.finished.status.value)
            if take.written:
                log.info(
                    "%s: %s (%.2f s, %d bytes)",
                    take.finished.recording.name,
                    take.written.path,
                    take.finished.duration,
                    take.written.size,
                )
            continue
        if isinstance(event, Rejected):
            log.error("at %.3f s: %s", getattr(event.control, "at", 0) / cloud.timebase.sample_rate, event.reason)
            continue
        if isinstance(event, Audio):
            continue
        data = cloud.of(event)
        if data is not None:
            _print(data)
    if failed is not None:
        raise failed


def _print(data: dict) -> None:
    sys.stdout.write(json.dumps(data, default=_plain) + "\n")
    sys.stdout.flush()


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
