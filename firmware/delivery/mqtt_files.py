"""Files over MQTT: the box sends a finished recording in chunks through the broker;
a receiver (``edge-recorder receive``) reassembles, verifies and stores it.

Theory of operation
-------------------
Everything both sides must agree on lives in this module: topics, messages, the
manifest (:class:`Offer`), the sender (:class:`FileSender`, on the box) and the
receiver (:class:`FileReceiver`, central side, storing into a
:class:`DirectoryStore` or, through ``uploads.upload``, an :class:`S3Store`).
Neither side owns an MQTT client here: the box's MQTT link (and ``receive``) own
the one connected paho client, subscribe to ``topics()`` and route every message
to ``on_message()``, which returns True when it was ours.

Topics, under ``<prefix>/<device_id>/files/`` (``tid``: a fresh transfer id per
offer; ``rid``: the receiver's id). All QoS 1; JSON unless said otherwise:

==========================  ========  ==============================================
topic                       from      payload
==========================  ========  ==============================================
``offer``                   box       manifest: v, tid, recording_id, name, size,
                                      sha256, chunk_size, chunks, window, timeout
``<tid>/accept``            receiver  {"receiver": rid}
``<tid>/<rid>/chunk/<i>``   box       raw bytes of chunk i (the last may be short)
``<tid>/progress``          receiver  {"receiver": rid, "received": k}
``<tid>/<rid>/done``        box       {"chunks": n}
``<tid>/nack``              receiver  {"receiver": rid, "missing": [i, ...]}
``<tid>/ack``               receiver  {"receiver": rid, "ok": true, "location": ...,
                                      "duplicate": bool} or {"receiver": rid,
                                      "ok": false, "code": ..., "error": ...,
                                      "retry": bool}
==========================  ========  ==============================================

1. Offer. The box publishes the manifest with a message expiry of ``timeout``.
   Receivers take offers through the shared subscription
   ``$share/<group>/<prefix>/+/files/offer``, so each offer reaches one receiver.
2. Accept. That receiver validates the manifest and the name, and answers a
   re-offer of a file it already stored (same recording id and sha256) with an
   ``ack`` at once (no second copy: a lost ack does not duplicate files). Else it
   subscribes, not shared, to ``<tid>/<rid>/#``, waits for the SUBACK, and
   publishes ``accept``. The box takes the first accept; the chunk stream is
   addressed to that receiver by name in its topics, so it can never be split
   between receivers, nor reach a second one should an offer ever be delivered
   twice. Replies from any other receiver are ignored.
3. Chunks. The box streams the file from disk in order, publishing chunk ``i``
   only while ``i < received + window`` (``received`` from the receiver's
   ``progress``, sent every ``window // 2`` chunks written): end-to-end flow
   control, so neither the box, the broker nor the receiver ever holds more than
   about ``window`` chunks of a transfer. The box also waits for the broker's
   PUBACK of the oldest chunk beyond ``window`` (paho keeps every unacknowledged
   payload). It hashes what it reads as it goes.
4. Done and repair. After the last chunk the box publishes ``done``. The
   receiver writes each chunk at its offset in a temp file (duplicates ignored,
   order not assumed) and hashes the contiguous prefix as it grows. If chunks
   are missing at ``done`` it publishes ``nack`` with their indices (at most
   ``NACK_MAX``); the box sends them again, then ``done`` again. After
   ``REPAIR_ROUNDS`` rounds the receiver gives up (``incomplete``, retry).
5. Verify, store, ack. The receiver checks size and sha256, fsyncs, stores
   atomically (hard link into place: never overwrites, and two receivers racing
   on a shared store keep exactly one copy), records the recording id and sha256
   for idempotency, then publishes ``ack``.

Failures, as the box's :class:`DeliveryError`:

- not connected, no accept within ``timeout``, the receiver silent for
  ``timeout`` at any step (it died mid-transfer), the broker refusing a chunk:
  transient. The outbox re-offers later under a new tid, which another
  receiver takes. (Mosquitto deals a group's offers round robin, offline
  members included: until a dead receiver's session expires, its share of
  offers waits there, expires, and is offered again. Hence a short session
  expiry for receivers, and a stopped receiver leaves the group at once.)
- a refusal with ``retry`` false: permanent. Codes: ``bad_offer``,
  ``bad_name`` (nothing usable left of the name), ``bad_device``. Refusals with
  ``retry``: ``busy``, ``unavailable``, ``abandoned``, ``bad_chunk``,
  ``incomplete``, ``size_mismatch``, ``store_failed`` (the store's trouble is
  never the file's fault).
- ``sha256_mismatch``: the box compares its own hash of what it streamed. If the
  file on disk does not match the sha256 it was asked to send, retrying cannot
  help: permanent. If it does, the bytes were damaged on the way: the box offers
  once more at once, and a second mismatch is permanent.

Timeouts are silences: ``timeout`` is the longest the box waits for any reply,
so a large file may take longer than ``timeout`` in all, but a dead receiver is
noticed within ``timeout``. The receiver gives up on a transfer when the box is
silent for the offer's ``timeout`` (a box that gave up, or an offer that waited
too long in a queue).

Trust: the device id comes from the topic, never from the payload; the broker's
ACL should let a box write only under its own ``<prefix>/<device_id>/files/#``
(mosquitto: ``pattern readwrite edge-recorder/%u/files/#``), and receivers
read and write ``<prefix>/+/files/#``. Names are made safe by :func:`safe_name`.
Receivers of one group should share one store, so that idempotency holds
whichever receiver a re-offer reaches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .errors import DeliveryError

log = logging.getLogger("edge-recorder.mqtt-files")

VERSION = 1
DEFAULT_CHUNK_SIZE = 128 * 1024
DEFAULT_WINDOW = 16
MAX_CHUNK_SIZE = 16 * 1024 * 1024
MAX_WINDOW = 256
NACK_MAX = 1024
REPAIR_ROUNDS = 3
SUBACK_TIMEOUT = 10.0
REPLIES = ("accept", "progress", "nack", "ack")

# Same rule as the config's device.id; also keeps "." and ".." out of the store's paths.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
RECEIVER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
INDEX = re.compile(r"^[0-9]{1,9}$")


# --- the manifest ----------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """What the box offers to send: the manifest, the first message of a transfer.

    >>> offer = Offer("t1", "RE1", "a.wav", 300, "0" * 64, 128, 3, 16, 30.0)
    >>> offer.chunk_length(2), Offer.parse(offer.payload()) == offer
    (44, True)
    """

    tid: str
    recording_id: str
    name: str
    size: int
    sha256: str
    chunk_size: int
    chunks: int
    window: int
    timeout: float

    def payload(self) -> bytes:
        return json.dumps({"v": VERSION, **asdict(self)}).encode()

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    @classmethod
    def parse(cls, payload: bytes | dict) -> Offer:
        """The manifest from a message; ValueError naming what is wrong."""
        body = _json(payload) if not isinstance(payload, dict) else payload
        if body.get("v") != VERSION:
            raise ValueError(f"protocol version {body.get('v')!r}, this receiver speaks {VERSION}")
        try:
            offer = cls(**{name: body[name] for name in cls.__dataclass_fields__})
        except KeyError as exc:
            raise ValueError(f"the offer has no {exc.args[0]!r}") from None
        checks = (
            (isinstance(offer.tid, str) and TID.match(offer.tid), "tid"),
            (isinstance(offer.recording_id, str) and 0 < len(offer.recording_id) <= 256, "recording_id"),
            (isinstance(offer.name, str), "name"),
            (_int(offer.size) and offer.size >= 0, "size"),
            (isinstance(offer.sha256, str) and SHA256.match(offer.sha256), "sha256 (64 lowercase hex digits)"),
            (_int(offer.chunk_size) and 0 < offer.chunk_size <= MAX_CHUNK_SIZE, f"chunk_size (1-{MAX_CHUNK_SIZE})"),
            (_int(offer.window) and 0 < offer.window <= MAX_WINDOW, f"window (1-{MAX_WINDOW})"),
            (_number(offer.timeout) and 0 < offer.timeout <= 3600, "timeout (seconds, up to 3600)"),
            (_int(offer.chunks), "chunks"),
        )
        for ok, field in checks:
            if not ok:
                raise ValueError(f"bad {field} in the offer")
        if offer.chunks != -(-offer.size // offer.chunk_size):
            raise ValueError(f"{offer.chunks} chunks cannot hold {offer.size} bytes in chunks of {offer.chunk_size}")
        return offer


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _json(payload: bytes) -> dict:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def safe_name(name: str) -> str:
    """The file name a box asked for, made safe to store in its device's directory.

    Control and invisible characters go, path separators (``/`` and ``\\``) are
    folded into ``_`` after dropping empty, ``.`` and ``..`` parts, and leading
    dots go (no hidden files). ValueError when nothing usable is left.

    >>> safe_name("20240501120000_box-1_CA12.wav")
    '20240501120000_box-1_CA12.wav'
    >>> safe_name("../../x"), safe_name("/etc/passwd"), safe_name("a\\\\..\\\\b\\x00\\n.wav")
    ('x', 'etc_passwd', 'a_b.wav')
    """
    if not isinstance(name, str):
        raise ValueError("the name is not a string")
    printable = "".join(ch for ch in name if ch.isprintable())
    parts = [part.strip() for part in printable.replace("\\", "/").split("/")]
    cleaned = "_".join(part for part in parts if part not in ("", ".", "..")).lstrip(". ")
    if not cleaned:
        raise ValueError(f"{name!r} has no usable file name in it")
    if len(cleaned.encode()) > 200:
        raise ValueError(f"{name[:40]!r}... is longer than 200 bytes")
    return cleaned


def _expiry(seconds: float) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = max(1, math.ceil(seconds))
    return props


# --- the box's side ----------------------------------------------------------------


@dataclass
class _Outgoing:
    """One transfer as the box sees it; changed under FileSender._cond."""

    tid: str
    heard: float
    receiver: str | None = None
    received: int = 0
    missing: tuple[int, ...] = ()
    ack: dict | None = None


class _DamagedOnTheWay(Exception):
    """The receiver's sha256 differs from the box's hash of the same bytes."""


class FileSender:
    """Sends files to whichever receiver takes the offer, over the box's MQTT client.

    The link subscribes to ``topics()`` (QoS 1) and passes every message to
    ``on_message``; ``send`` blocks (in the caller's thread, never paho's) until
    the receiver acknowledges. Several sends may run at once::

        sender = FileSender(client, "edge-recorder", "box-1")
        for topic in sender.topics():
            client.subscribe(topic, qos=1)
        location = sender.send(path, "20240501120000_box-1_CA12.wav", sha256, recording_id="RE12")
    """

    def __init__(
        self,
        client: mqtt.Client,
        prefix: str,
        device_id: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if not DEVICE_ID.match(device_id):
            raise ValueError(f"device id {device_id!r}: expected letters, digits, - and _")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE or not 0 < window <= MAX_WINDOW:
            raise ValueError(f"chunk_size 1-{MAX_CHUNK_SIZE} and window 1-{MAX_WINDOW} expected")
        self._client = client
        self._base = f"{prefix.strip('/')}/{device_id}/files"
        self.chunk_size = chunk_size
        self.window = window
        self._cond = threading.Condition()
        self._transfers: dict[str, _Outgoing] = {}

    def topics(self) -> list[str]:
        return [f"{self._base}/+/{kind}" for kind in REPLIES]

    def on_message(self, message: mqtt.MQTTMessage) -> bool:
        if not message.topic.startswith(self._base + "/"):
            return False
        parts = message.topic[len(self._base) + 1 :].split("/")
        if len(parts) != 2 or parts[1] not in REPLIES:
            return False
        tid, kind = parts
        try:
            body = _json(message.payload)
        except ValueError as exc:
            log.warning("%s: %s; ignored", message.topic, exc)
            return True
        with self._cond:
            transfer = self._transfers.get(tid)
            if transfer is None:
                return True  # a transfer this box has given up on
            sender = body.get("receiver")
            if transfer.receiver is not None and sender != transfer.receiver:
                return True  # another receiver that also got the offer: it gets no chunks
            transfer.heard = time.monotonic()
            if kind == "accept" and transfer.receiver is None and isinstance(sender, str) and RECEIVER_ID.match(sender):
                transfer.receiver = sender
            elif kind == "progress" and _int(body.get("received")):
                transfer.received = max(transfer.received, body["received"])
            elif kind == "nack" and isinstance(body.get("missing"), list):
                transfer.missing = tuple(i for i in body["missing"] if _int(i))
            elif kind == "ack":
                transfer.ack = body
            self._cond.notify_all()
        return True

    def send(self, path: Path, name: str, sha256: str, *, recording_id: str, timeout: float = 120.0) -> str:
        """Send the file; return the location the receiver stored it at. Raises DeliveryError."""
        path = Path(path)
        try:
            return self._send_once(path, name, sha256, recording_id, timeout)
        except _DamagedOnTheWay as exc:
            log.warning("%s: %s; offering it once more", path, exc)
        try:
            return self._send_once(path, name, sha256, recording_id, timeout)
        except _DamagedOnTheWay as exc:
            raise DeliveryError(f"{path}: {exc}, twice", permanent=True) from None

    def _send_once(self, path: Path, name: str, sha256: str, recording_id: str, timeout: float) -> str:
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise DeliveryError(f"{path}: the file is gone", permanent=True) from None
        except OSError as exc:
            raise DeliveryError(f"{path}: {exc.strerror}", permanent=False) from None
        with file:
            size = os.fstat(file.fileno()).st_size
            offer = Offer(
                tid=uuid.uuid4().hex,
                recording_id=recording_id,
                name=name,
                size=size,
                sha256=sha256.lower(),
                chunk_size=self.chunk_size,
                chunks=-(-size // self.chunk_size),
                window=self.window,
                timeout=float(timeout),
            )
            transfer = _Outgoing(offer.tid, heard=time.monotonic())
            with self._cond:
                self._transfers[offer.tid] = transfer
            try:
                return self._transfer(file, path, offer, transfer)
            finally:
                with self._cond:
                    del self._transfers[offer.tid]

    def _transfer(self, file: BinaryIO, path: Path, offer: Offer, transfer: _Outgoing) -> str:
        if not self._client.is_connected():
            raise DeliveryError("not connected to the MQTT broker", permanent=False)
        self._publish(f"{self._base}/offer", offer.payload(), offer.timeout)
        self._wait(
            transfer,
            lambda: transfer.receiver is not None or transfer.ack is not None,
            f"no receiver accepted the offer of {path.name} within {offer.timeout:g} s",
            offer.timeout,
        )
        if transfer.ack is not None:  # already stored, or refused up front
            return self._verdict(path, offer, transfer, streamed=None)
        stream = f"{self._base}/{offer.tid}/{transfer.receiver}"
        digest = hashlib.sha256()
        pending: deque[mqtt.MQTTMessageInfo] = deque()
        for index in range(offer.chunks):
            self._wait_for_credit(transfer, index, offer)
            if transfer.ack is not None:  # the receiver gave up early (e.g. its disk is full)
                return self._verdict(path, offer, transfer, streamed=None)
            data = file.read(offer.chunk_length(index))
            if len(data) != offer.chunk_length(index):
                raise DeliveryError(f"{path}: the file shrank while it was being sent", permanent=False)
            digest.update(data)
            pending.append(self._publish(f"{stream}/chunk/{index}", data, offer.timeout))
            while len(pending) > self.window:
                self._settle(pending.popleft(), offer.timeout)
        streamed = digest.hexdigest()
        done = json.dumps({"chunks": offer.chunks}).encode()
        self._publish(f"{stream}/done", done, offer.timeout)
        while True:
            self._wait(
                transfer,
                lambda: transfer.ack is not None or bool(transfer.missing),
                f"receiver {transfer.receiver} went silent after the last chunk of {path.name}",
                offer.timeout,
            )
            if transfer.ack is not None:
                return self._verdict(path, offer, transfer, streamed)
            with self._cond:
                missing, transfer.missing = transfer.missing, ()
            log.info("%s: receiver %s lacks %d chunks; sending them again", path.name, transfer.receiver, len(missing))
            for index in missing:
                if 0 <= index < offer.chunks:
                    data = os.pread(file.fileno(), offer.chunk_length(index), index * offer.chunk_size)
                    pending.append(self._publish(f"{stream}/chunk/{index}", data, offer.timeout))
                    while len(pending) > self.window:
                        self._settle(pending.popleft(), offer.timeout)
            self._publish(f"{stream}/done", done, offer.timeout)

    def _wait_for_credit(self, transfer: _Outgoing, index: int, offer: Offer) -> None:
        self._wait(
            transfer,
            lambda: transfer.ack is not None or index < transfer.received + offer.window,
            f"receiver {transfer.receiver} went silent after {transfer.received} of {offer.chunks} chunks",
            offer.timeout,
        )

    def _wait(self, transfer: _Outgoing, ready: Callable[[], bool], silence: str, timeout: float) -> None:
        """Until ``ready()``; DeliveryError(transient) when the receiver is silent for ``timeout``."""
        with self._cond:
            while not ready():
                left = transfer.heard + timeout - time.monotonic()
                if left <= 0:
                    raise DeliveryError(silence, permanent=False)
                self._cond.wait(left)

    def _publish(self, topic: str, payload: bytes, timeout: float) -> mqtt.MQTTMessageInfo:
        info = self._client.publish(topic, payload, qos=1, properties=_expiry(timeout))
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise DeliveryError(f"publishing to {topic}: {mqtt.error_string(info.rc)}", permanent=False)
        return info

    def _settle(self, info: mqtt.MQTTMessageInfo, timeout: float) -> None:
        """Wait for the broker's PUBACK, so paho holds at most ``window`` chunks."""
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise DeliveryError(f"the broker did not take a chunk: {exc}", permanent=False) from None
        if not info.is_published():
            raise DeliveryError(f"the broker did not acknowledge a chunk within {timeout:g} s", permanent=False)

    def _verdict(self, path: Path, offer: Offer, transfer: _Outgoing, streamed: str | None) -> str:
        ack = transfer.ack or {}
        who = ack.get("receiver", "?")
        if ack.get("ok") is True and isinstance(ack.get("location"), str):
            log.info(
                "%s: %s by receiver %s at %s",
                path.name,
                "already stored" if ack.get("duplicate") else "delivered",
                who,
                ack["location"],
            )
            return ack["location"]
        error = str(ack.get("error") or "no reason given")
        if ack.get("code") == "sha256_mismatch" and streamed is not None:
            if streamed != offer.sha256:
                raise DeliveryError(
                    f"{path}: its content has sha256 {streamed}, not {offer.sha256} as recorded", permanent=True
                )
            raise _DamagedOnTheWay(f"receiver {who} got data with another sha256 ({error})")
        raise DeliveryError(f"receiver {who} refused {offer.name}: {error}", permanent=ack.get("retry") is not True)
