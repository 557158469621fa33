"""``edge-recorder receive``: the central side of the ``mqtt`` upload destination.

Takes file offers from boxes through an MQTT 5 shared subscription (several
receivers in one group split the fleet's uploads), reassembles each file,
verifies its size and sha256, stores it under ``STORE/<device_id>/<name>`` (a
directory, or ``s3://bucket/prefix/`` through the S3 upload path) and
acknowledges it so the box can mark it delivered. One JSON line per stored file
goes to stdout (device_id, recording_id, name, size, sha256, path); logs go to
stderr. SIGTERM or SIGINT: take no more offers, let running transfers finish
(up to 10 s), leave the group and exit 0.

Session: the receiver connects with clean_start false and ``--session-expiry``
(default 30 s), so a restart or a network blip loses neither offers nor running
transfers. The broker (Mosquitto) hands out a group's offers round robin, also
to members that are offline, so a receiver that dies without a goodbye gets its
share of offers until its session expires; those offers time out at the box and
are offered again. Offers live only as long as the box waits for an accept
(their message expiry), so a longer session buys little. A receiver that is
stopped (SIGTERM) leaves the group at once (session expiry 0 on DISCONNECT).

The protocol is described in ``firmware/delivery/mqtt_files.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import socket
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..delivery.mqtt_files import RECEIVER_ID
from ..delivery.mqtt_receiver import DirectoryStore, FileReceiver, S3Store, Stored
from . import exits

log = logging.getLogger("edge-recorder.receive")

DRAIN_SECONDS = 10.0
BROKER_URL = re.compile(r"^(mqtts?)://([^/:\s]+)(?::(\d{1,5}))?/?$")
# CONNACK reason codes that no amount of reconnecting will fix.
FATAL_CONNACK = {
    0x84: "the broker does not speak MQTT 5",
    0x85: "check --receiver-id",
    0x86: "check --username and --password-file",
    0x87: "check --username and --password-file",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("receive", help="receive files boxes send over MQTT (the mqtt upload destination)")
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--broker", required=True, metavar="URL", help="mqtt://host[:port] or mqtts://host[:port]")
    p.add_argument("--username", help="MQTT user name")
    p.add_argument("--password-file", type=Path, metavar="FILE", help="file whose first line is the MQTT password")
    p.add_argument("--tls-ca", type=Path, metavar="FILE", help="CA certificate of the broker (implies TLS)")
    p.add_argument("--prefix", default="edge-recorder", help="topic prefix of the boxes (default edge-recorder)")
    p.add_argument("--group", default="receivers", help="shared subscription group (default receivers)")
    p.add_argument(
        "--store", required=True, metavar="DIR", help="directory (or s3://bucket/prefix/) to store files in, per device"
    )
    p.add_argument(
        "--s3-endpoint",
        default="",
        metavar="URL",
        help="with --store s3://...: the S3 endpoint, e.g. http://127.0.0.1:8333 (default: AWS); "
        "keys come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    )
    p.add_argument("--s3-region", default="", help="with --store s3://...: the region (default: the bucket's)")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/var/tmp/edge-recorder-receive"),
        metavar="DIR",
        help="with --store s3://...: local directory for files being received (default /var/tmp/edge-recorder-receive)",
    )
    p.add_argument("--receiver-id", help="unique per receiver process; also its MQTT client id (default: host name)")
    p.add_argument(
        "--session-expiry",
        type=int,
        default=30,
        metavar="SECONDS",
        help="how long the broker keeps this receiver's share of offers while it is offline (default 30)",
    )
    p.add_argument("--max-transfers", type=int, default=16, metavar="N", help="concurrent transfers (default 16)")
    p.add_argument("--once", type=int, metavar="N", help="exit after storing N files (for tests and scripts)")
    p.set_defaults(run=run)


def _receiver_id(args: argparse.Namespace) -> str:
    if args.receiver_id is not None:
        return args.receiver_id
    return re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64] or "receiver"


def _store(args: argparse.Namespace) -> DirectoryStore:
    if not args.store.startswith("s3://"):
        return DirectoryStore(Path(args.store))
    from ..delivery.uploads import Credentials

    if not re.match(r"^s3://[^/\s]+(/\S*)?$", args.store):
        raise ValueError(f"--store {args.store!r}: expected a directory or s3://bucket/prefix/")
    # Keys from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, as uploads.Credentials falls back to them.
    credentials = Credentials(s3_endpoint=args.s3_endpoint, s3_region=args.s3_region)
    return S3Store(args.store, credentials, args.work_dir)


def run(args: argparse.Namespace) -> int:
    match = BROKER_URL.match(args.broker)
    if not match:
        return exits.fail(
            exits.USAGE, f'--broker {args.broker!r}: expected "mqtt://host[:port]" or "mqtts://host[:port]"'
        )
    scheme, host, port = match.groups()
    receiver_id = _receiver_id(args)
    if not RECEIVER_ID.match(receiver_id):
        return exits.fail(
            exits.USAGE, f"--receiver-id {receiver_id!r}: expected letters, digits, ., - and _ (at most 64)"
        )
    prefix = args.prefix.strip("/")
    for option, value in (("--prefix", prefix), ("--group", args.group)):
        if (
            not value
            or any(ch in value for ch in "#+\x00")
            or value.startswith("$")
            or (option == "--group" and "/" in value)
        ):
            return exits.fail(exits.USAGE, f"{option} {value!r}: expected a topic name without #, + or a leading $")
    if not 0 <= args.session_expiry <= 2**32 - 1 or args.max_transfers < 1 or (args.once is not None and args.once < 1):
        return exits.fail(exits.USAGE, "--session-expiry must be 0 or more, --max-transfers and --once 1 or more")
    password = None
    if args.password_file is not None and args.username is None:
        return exits.fail(exits.USAGE, "--password-file needs --username")
    if args.password_file is not None:
        try:
            lines = args.password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            return exits.fail(exits.NOINPUT, f"--password-file {args.password_file}: {exc.strerror}")
        password = lines[0] if lines else ""
    try:
        store = _store(args)
    except ValueError as exc:
        return exits.fail(exits.USAGE, str(exc))
    except OSError as exc:
        return exits.fail(exits.CANTCREAT, f"{exc.filename or args.store}: {exc.strerror}")
    store.sweep()

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-recorder-receive-{receiver_id}", protocol=mqtt.MQTTv5
    )
    if args.username is not None:
        client.username_pw_set(args.username, password)
    if scheme == "mqtts" or args.tls_ca is not None:
        try:
            client.tls_set(ca_certs=str(args.tls_ca) if args.tls_ca else None)
        except (OSError, ValueError) as exc:
            return exits.fail(exits.CONFIG, f"--tls-ca {args.tls_ca}: {exc}")
    client.reconnect_delay_set(min_delay=1, max_delay=30)

    stop = threading.Event()
    stored_count = 0
    fatal: list[str] = []
    count_lock = threading.Lock()

    def on_stored(stored: Stored) -> None:
        nonlocal stored_count
        line = {
            "device_id": stored.device_id,
            "recording_id": stored.recording_id,
            "name": stored.name,
            "size": stored.size,
            "sha256": stored.sha256,
            "path": stored.location,
        }
        with count_lock:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
            stored_count += 1
            if args.once is not None and stored_count >= args.once:
                stop.set()

    receiver = FileReceiver(
        client, prefix, args.group, store, receiver_id, on_stored=on_stored, max_transfers=args.max_transfers
    )

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if reason_code.value in FATAL_CONNACK:
                fatal.append(
                    f"{args.broker} refused the connection: {reason_code} ({FATAL_CONNACK[reason_code.value]})"
                )
                stop.set()
            else:
                log.warning("broker %s refused the connection: %s; retrying", args.broker, reason_code)
            return
        log.info("connected to %s (session %s)", args.broker, "resumed" if flags.session_present else "new")
        receiver.on_connect(flags.session_present)

    def on_disconnect(client, userdata, flags, reason_code, properties) -> None:
        if not stop.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def on_connect_fail(client, userdata) -> None:
        log.warning("cannot reach %s; retrying", args.broker)

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_connect_fail = on_connect_fail
    client.on_subscribe = lambda client, userdata, mid, reason_codes, properties: receiver.on_subscribe(
        mid, reason_codes
    )

    def on_message(client, userdata, message) -> None:
        try:
            receiver.on_message(message)
        except Exception:  # an exception here would end paho's network thread
            log.exception("message on %s", message.topic)

    client.on_message = on_message

    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = args.session_expiry
    default_port = 8883 if scheme == "mqtts" or args.tls_ca is not None else 1883
    client.connect_async(host, int(port or default_port), keepalive=30, clean_start=False, properties=connect)
    previous = _on_signals(stop)
    client.loop_start()
    try:
        while not stop.wait(0.2):
            if receiver.refused:
                fatal.append(receiver.refused)
                break
    finally:
        receiver.close(DRAIN_SECONDS)
        # Leave the group now rather than when the session expires: offers must not queue up for us.
        leave = Properties(PacketTypes.DISCONNECT)
        leave.SessionExpiryInterval = 0
        client.disconnect(properties=leave)
        client.loop_stop()
        _restore_signals(previous)
    if fatal:
        return exits.fail(exits.CONFIG, fatal[0])
    log.info("receiver %s stopped after storing %d files", receiver_id, stored_count)
    return exits.OK


def _on_signals(stop: threading.Event) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}  # run() in a thread (tests): the caller stops it some other way
    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous[number] = signal.signal(number, lambda signum, frame: stop.set())
    return previous


def _restore_signals(previous: dict) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware.cli.receive ...``: the command without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="edge-recorder receive")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="more log detail on stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
