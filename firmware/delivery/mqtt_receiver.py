"""The receiver's side of files over MQTT (``edge-recorder receive``): reassemble, verify, store.

The protocol, its topics and the manifest are described in ``mqtt_files``,
which both sides share. Stores: a directory (``DirectoryStore``) or, through
``uploads.upload``, an S3 bucket (``S3Store``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import mimetypes
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from .errors import DeliveryError
from .mqtt_files import (
    DEVICE_ID,
    INDEX,
    NACK_MAX,
    RECEIVER_ID,
    REPAIR_ROUNDS,
    SUBACK_TIMEOUT,
    TID,
    Offer,
    _json,
    safe_name,
)

log = logging.getLogger("edge-recorder.mqtt-files")


# --- the receiver's side ----------------------------------------------------------


#: Logged once the broker has granted the subscription to offers: from then on no offer is missed.
READY = "taking offers from"


@dataclass(frozen=True)
class Stored:
    """A file a receiver stored (``location``: a path for a DirectoryStore)."""

    device_id: str
    recording_id: str
    name: str
    size: int
    sha256: str
    location: str


class DirectoryStore:
    """Received files under ``<root>/<device_id>/<name>``, stored at most once.

    Temp files go to ``<device>/.incoming/``, on the same file system as their
    target so that storing is a hard link (atomic, never overwrites). Each
    stored recording is remembered in ``<device>/.received/`` (recording id and
    sha256) so a re-offer is answered without storing it again. A name already
    taken by other content gets ``.1``, ``.2``... before its extension.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def lookup(self, device_id: str, recording_id: str, sha256: str) -> str | None:
        """Where this recording with this content was stored before, if it still is."""
        try:
            entry = json.loads(self._index(device_id, recording_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if entry.get("sha256") == sha256 and self._still_there(entry.get("location", "")):
            return entry["location"]
        return None

    def _still_there(self, location: str) -> bool:
        return Path(location).is_file()

    def temp(self, device_id: str, tid: str) -> Path:
        incoming = self.root / device_id / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        return incoming / f"{tid}.part"

    def put(self, temp: Path, device_id: str, name: str, recording_id: str, sha256: str) -> tuple[str, bool]:
        """Store the (fsynced) temp file; return (location, already stored)."""
        directory = self.root / device_id
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        candidates = [name] + [f"{stem}.{n}{dot}{ext}" for n in range(1, 100)]
        for candidate in candidates:
            target = directory / candidate
            try:
                _link(temp, target)
            except FileExistsError:
                if _same_content(target, temp.stat().st_size, sha256):
                    duplicate = True
                    break
                continue
            duplicate = False
            break
        else:
            raise OSError(errno.EEXIST, f"{name} and 99 variants are taken by other files")
        temp.unlink(missing_ok=True)
        _fsync_dir(directory)
        self._remember(device_id, recording_id, sha256, str(target))
        return str(target), duplicate

    def sweep(self, older_than: float = 86400.0) -> None:
        """Remove temp files of transfers abandoned long ago (a receiver that was killed)."""
        limit = time.time() - older_than
        for part in self.root.glob("*/.incoming/*.part"):
            try:
                if part.stat().st_mtime < limit:
                    part.unlink()
            except OSError:
                pass

    def _index(self, device_id: str, recording_id: str) -> Path:
        key = hashlib.sha256(recording_id.encode()).hexdigest()[:32]
        return self.root / device_id / ".received" / f"{key}.json"

    def _remember(self, device_id: str, recording_id: str, sha256: str, location: str) -> None:
        index = self._index(device_id, recording_id)
        index.parent.mkdir(parents=True, exist_ok=True)
        temp = index.with_suffix(f".{uuid.uuid4().hex[:8]}.tmp")
        entry = {"recording_id": recording_id, "sha256": sha256, "location": location}
        with temp.open("w", encoding="utf-8") as out:
            json.dump(entry, out)
            out.flush()
            os.fsync(out.fileno())
        temp.replace(index)
        _fsync_dir(index.parent)


class S3Store(DirectoryStore):
    """Verified files go to ``<url><device_id>/<name>`` (``url``: ``s3://bucket/prefix/``).

    Through ``uploads.upload``, which checks the bytes it sends against the
    sha256 and the object it wrote. Temp files and the index of what was
    stored stay in ``work_dir`` on local disk; S3 has no "create if absent",
    so a name reused for other content overwrites it there.
    """

    def __init__(self, url: str, credentials: Any, work_dir: Path, *, timeout: float = 300.0) -> None:
        super().__init__(work_dir)
        self.url = url if url.endswith("/") else url + "/"
        self.credentials = credentials
        self.timeout = timeout

    def _still_there(self, location: str) -> bool:
        return location.startswith(self.url)

    def put(self, temp: Path, device_id: str, name: str, recording_id: str, sha256: str) -> tuple[str, bool]:
        from .uploads import upload

        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        try:
            location = upload(
                temp,
                f"{self.url}{device_id}/",
                name,
                sha256=sha256,
                content_type=content_type,
                credentials=self.credentials,
                timeout=self.timeout,
            )
        except DeliveryError as exc:  # whatever S3 says, the box's file is fine: it should retry
            raise OSError(errno.EIO, f"S3: {exc}") from None
        temp.unlink(missing_ok=True)
        self._remember(device_id, recording_id, sha256, location)
        return location, False


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:  # a file system without hard links: rename, with a (small) race
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if target.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        os.rename(source, target)


def _same_content(path: Path, size: int, sha256: str) -> bool:
    try:
        if path.stat().st_size != size:
            return False
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == sha256


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Refused(Exception):
    """Ends a transfer with ``ack`` ok=false."""

    def __init__(self, code: str, error: str, *, retry: bool) -> None:
        super().__init__(error)
        self.code = code
        self.retry = retry


@dataclass
class _Incoming:
    device_id: str
    tid: str
    body: dict
    inbox: queue.Queue
    subscribed: str | None = None


class FileReceiver:
    """Takes offers for its group, reassembles, verifies, stores and acknowledges.

    The owner of the client routes ``on_connect``, ``on_subscribe`` and
    ``on_message`` to it; each transfer runs in its own thread, so several boxes
    can send at once. ``on_stored`` is called for each file newly stored::

        receiver = FileReceiver(client, "edge-recorder", "receivers", DirectoryStore(root), "rx-1")
        client.on_message = lambda c, u, message: receiver.on_message(message)
    """

    def __init__(
        self,
        client: mqtt.Client,
        prefix: str,
        group: str,
        store: DirectoryStore,
        receiver_id: str,
        *,
        on_stored: Callable[[Stored], None] | None = None,
        max_transfers: int = 16,
    ) -> None:
        if not RECEIVER_ID.match(receiver_id):
            raise ValueError(f"receiver id {receiver_id!r}: expected letters, digits, ., - and _ (at most 64)")
        self._client = client
        self.prefix = prefix.strip("/")
        self.group = group
        self.store = store
        self.receiver_id = receiver_id
        self.on_stored = on_stored
        self.max_transfers = max_transfers
        self.ready = threading.Event()
        self.refused: str | None = None  # the broker refused our offer subscription
        self._cond = threading.Condition()
        self._transfers: dict[tuple[str, str], _Incoming] = {}
        self._threads: set[threading.Thread] = set()
        self._offer_mid: int | None = None
        self._subacks: dict[int, list | None] = {}  # mid -> reason codes, for SUBACKs a thread waits for
        self._closing = False

    def topics(self) -> list[str]:
        return [f"$share/{self.group}/{self.prefix}/+/files/offer"]

    def on_connect(self, session_present: bool) -> None:
        with self._cond:
            if self._closing:
                return
            _, self._offer_mid = self._client.subscribe(self.topics()[0], qos=1)
            if not session_present:  # the broker forgot our transfers' subscriptions
                for transfer in self._transfers.values():
                    if transfer.subscribed:
                        self._client.subscribe(transfer.subscribed, qos=1)

    def on_subscribe(self, mid: int, reason_codes: list) -> None:
        with self._cond:
            if mid == self._offer_mid:
                if reason_codes and reason_codes[0].is_failure:
                    self.refused = f"the broker refused {self.topics()[0]}: {reason_codes[0]}"
                    log.error("%s", self.refused)
                elif not self.ready.is_set():
                    log.info("receiver %s %s %s", self.receiver_id, READY, self.topics()[0])
                    self.ready.set()
            if mid in self._subacks:
                self._subacks[mid] = list(reason_codes)
                self._cond.notify_all()

    def on_message(self, message: mqtt.MQTTMessage) -> bool:
        if not message.topic.startswith(self.prefix + "/"):
            return False
        parts = message.topic[len(self.prefix) + 1 :].split("/")
        if len(parts) < 3 or parts[1] != "files":
            return False
        device_id = parts[0]
        if parts[2:] == ["offer"]:
            self._offer(device_id, message.payload)
            return True
        if len(parts) < 5 or parts[3] != self.receiver_id:
            return False
        with self._cond:
            transfer = self._transfers.get((device_id, parts[2]))
        if transfer is None:
            return True  # a transfer already over
        if parts[4:] == ["done"]:
            transfer.inbox.put(("done", 0, b""))
        elif len(parts) == 6 and parts[4] == "chunk" and INDEX.match(parts[5]):
            transfer.inbox.put(("chunk", int(parts[5]), message.payload))
        return True

    def close(self, grace: float = 10.0) -> None:
        """Take no more offers; let running transfers finish for ``grace`` seconds, then end them."""
        with self._cond:
            self._closing = True
            transfers = list(self._transfers.values())
            threads = list(self._threads)
        self._client.unsubscribe(self.topics()[0])
        if transfers:
            log.info("waiting up to %g s for %d transfers to finish", grace, len(transfers))
        deadline = time.monotonic() + grace
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            transfers = list(self._transfers.values())
        for transfer in transfers:
            transfer.inbox.put(("stop", 0, b""))
        for thread in threads:
            thread.join(5.0)

    # -- one transfer, in its own thread

    def _offer(self, device_id: str, payload: bytes) -> None:
        try:
            body = _json(payload)
        except ValueError as exc:
            log.warning("offer from %s: %s; ignored", device_id, exc)
            return
        tid = body.get("tid")
        if not isinstance(tid, str) or not TID.match(tid):
            log.warning("offer from %s without a usable tid; ignored", device_id)
            return
        transfer = _Incoming(device_id, tid, body, queue.Queue())
        with self._cond:
            if (device_id, tid) in self._transfers:
                return  # the same offer again (QoS 1 redelivery)
            busy = self._closing or len(self._transfers) >= self.max_transfers
            if not busy:
                self._transfers[(device_id, tid)] = transfer
                thread = threading.Thread(target=self._run, args=(transfer,), name=f"receive-{tid[:8]}", daemon=True)
                self._threads.add(thread)
                thread.start()
        if busy:
            why = "shutting down" if self._closing else f"busy with {self.max_transfers} transfers"
            self._reply(transfer, "ack", ok=False, code="busy", error=f"receiver {why}", retry=True)

    def _run(self, transfer: _Incoming) -> None:
        temp: Path | None = None
        try:
            offer = self._check(transfer)
            temp = self.store.temp(transfer.device_id, offer.tid)
            self._take(transfer, offer, temp)
        except _Refused as exc:
            log.warning("transfer %s from %s: %s", transfer.tid, transfer.device_id, exc)
            self._reply(transfer, "ack", ok=False, code=exc.code, error=str(exc), retry=exc.retry)
        except Exception as exc:
            log.exception("transfer %s from %s failed", transfer.tid, transfer.device_id)
            self._reply(transfer, "ack", ok=False, code="store_failed", error=str(exc), retry=True)
        finally:
            if transfer.subscribed:
                self._client.unsubscribe(transfer.subscribed)
            if temp is not None:
                temp.unlink(missing_ok=True)
            with self._cond:
                self._transfers.pop((transfer.device_id, transfer.tid), None)
                self._threads.discard(threading.current_thread())

    def _check(self, transfer: _Incoming) -> Offer:
        if not DEVICE_ID.match(transfer.device_id):
            raise _Refused("bad_device", f"device id {transfer.device_id!r} is not allowed", retry=False)
        try:
            offer = Offer.parse(transfer.body)
        except ValueError as exc:
            raise _Refused("bad_offer", str(exc), retry=False) from None
        try:
            safe_name(offer.name)
        except ValueError as exc:
            raise _Refused("bad_name", str(exc), retry=False) from None
        return offer

    def _take(self, transfer: _Incoming, offer: Offer, temp: Path) -> None:
        name = safe_name(offer.name)
        earlier = self.store.lookup(transfer.device_id, offer.recording_id, offer.sha256)
        if earlier is not None:
            log.info("%s from %s was stored before at %s", offer.recording_id, transfer.device_id, earlier)
            self._reply(transfer, "ack", ok=True, location=earlier, duplicate=True)
            return
        topic = f"{self.prefix}/{transfer.device_id}/files/{offer.tid}/{self.receiver_id}/#"
        if not self._subscribe(topic):
            raise _Refused("unavailable", f"could not subscribe to {topic}", retry=True)
        transfer.subscribed = topic
        self._reply(transfer, "accept")
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            digest = self._reassemble(transfer, offer, fd)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise _Refused("store_failed", f"writing {temp}: {exc.strerror}", retry=True) from None
        finally:
            os.close(fd)
        if size != offer.size:
            raise _Refused("size_mismatch", f"received {size} bytes, the offer said {offer.size}", retry=True)
        if digest != offer.sha256:
            raise _Refused(
                "sha256_mismatch", f"received data has sha256 {digest}, the offer said {offer.sha256}", retry=True
            )
        try:
            location, duplicate = self.store.put(temp, transfer.device_id, name, offer.recording_id, offer.sha256)
        except OSError as exc:
            raise _Refused("store_failed", f"storing {name}: {exc.strerror or exc}", retry=True) from None
        info = self._reply(transfer, "ack", ok=True, location=location, duplicate=duplicate)
        with contextlib.suppress(RuntimeError, ValueError):  # if it is lost, the store answers the re-offer
            info.wait_for_publish(5.0)
        if duplicate:
            log.info("%s from %s was already at %s", offer.recording_id, transfer.device_id, location)
            return
        log.info("stored %s from %s: %d bytes at %s", offer.recording_id, transfer.device_id, size, location)
        if self.on_stored is not None:
            stored = Stored(transfer.device_id, offer.recording_id, Path(location).name, size, digest, location)
            self.on_stored(stored)

    def _reassemble(self, transfer: _Incoming, offer: Offer, fd: int) -> str:
        """Write chunks at their offsets until all are in; return the sha256 of the whole."""
        received: set[int] = set()
        hashed = 0  # chunks [0, hashed) are in the digest
        digest = hashlib.sha256()
        step = max(1, offer.window // 2)
        rounds = 0
        while True:
            try:
                kind, index, data = transfer.inbox.get(timeout=offer.timeout)
            except queue.Empty:
                raise _Refused("abandoned", f"nothing from the box for {offer.timeout:g} s", retry=True) from None
            if kind == "stop":
                raise _Refused("busy", "receiver shutting down", retry=True)
            if kind == "chunk":
                if index >= offer.chunks or len(data) != offer.chunk_length(index):
                    raise _Refused("bad_chunk", f"chunk {index} does not fit the offer", retry=True)
                if index in received:
                    continue
                _pwrite(fd, data, index * offer.chunk_size)
                received.add(index)
                while hashed in received:
                    length = offer.chunk_length(hashed)
                    digest.update(data if hashed == index else os.pread(fd, length, hashed * offer.chunk_size))
                    hashed += 1
                if len(received) % step == 0:
                    self._reply(transfer, "progress", received=len(received))
            elif len(received) == offer.chunks:
                return digest.hexdigest()
            else:
                rounds += 1
                missing = sorted(set(range(offer.chunks)) - received)
                if rounds > REPAIR_ROUNDS:
                    raise _Refused("incomplete", f"{len(missing)} chunks still missing", retry=True)
                self._reply(transfer, "nack", missing=missing[:NACK_MAX])

    def _subscribe(self, topic: str) -> bool:
        """Subscribe and wait for the SUBACK, so no chunk can come before the subscription."""
        with self._cond:
            rc, mid = self._client.subscribe(topic, qos=1)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                return False
            self._subacks.setdefault(mid, None)
            self._cond.wait_for(lambda: self._subacks.get(mid) is not None, SUBACK_TIMEOUT)
            codes = self._subacks.pop(mid, None)
        return bool(codes) and not codes[0].is_failure

    def _reply(self, transfer: _Incoming, kind: str, **body: Any) -> mqtt.MQTTMessageInfo:
        topic = f"{self.prefix}/{transfer.device_id}/files/{transfer.tid}/{kind}"
        payload = json.dumps({"receiver": self.receiver_id, **body}).encode()
        return self._client.publish(topic, payload, qos=1)


def _pwrite(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
