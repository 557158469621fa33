"""Local API and encryption: list latency on a big catalog, media download speed, encryption cost per period.

Reports:

1. latency of ``GET /v1/recordings`` with ``BENCH_API_ROWS`` (100,000) recordings
   in the catalog. The catalog is filled in one transaction with rows like the
   daemon's own (spread over 90 days of ``date_created``, a few statuses, one to
   three recordings per call, an upload row each), an empty file stands in for
   every stored medium so start-up recovery leaves the rows alone, and the real
   daemon (``edge-recorder run``, simulated box at real time, 16 kHz stereo call
   audio, a dual recording started by the button at 1 s and running throughout)
   serves the API on loopback. This process is the client (``requests``, one
   kept-alive connection, a bearer token): ``BENCH_API_REQUESTS`` (500) timed
   requests of each kind, interleaved: the first page (``page_size=50``); pages
   reached by following ``next_page_url`` 20 times from the first (25 walks,
   each follow timed); a page at row ~90,000 (its ``next_page_url``, reached with
   ``page_size=1000``); a 7-day ``date_created`` window at a random place; a
   random ``call_id``; and, fewer, ``status=completed``. Baseline in the same run:
   ``GET /v1/health`` (HTTP, routing, a small JSON body). Then, on a copy of
   the catalog, the SQL ``Catalog.page`` runs for each kind (caught with its
   arguments) is timed alone and its plan shown (``EXPLAIN QUERY PLAN``), and
   two candidate fixes are timed the same way: the page cursor as a row value
   and an index on ``(status, date_created)``;
2. media download on loopback: a ``BENCH_MEDIA_MB`` (50) MB WAV in the spool,
   a catalog row pointing at it, fetched from the API whole and in 1 MiB Range
   requests, MB/s; baseline: the same file from aiohttp's static file server
   (whole and Range) and from ``python -m http.server`` (whole), each server in
   a process of its own, ``BENCH_MEDIA_ROUNDS`` (9) rounds interleaved, medians;
3. encryption on the real-time path: the core (``firmware.core.Recorder``) fed
   ``BENCH_ENCRYPT_SECONDS`` (600) s of 16 kHz stereo call audio (``bench/calls.py``)
   in 20 ms periods with one dual recording, its events handed to the spool
   (``firmware.spool.Takes``, fsync every 1 s of audio) writing a plain part
   (``PartFile``) or an encrypted one (``EncryptedPart``: a segment sealed every
   ``SEGMENT_SECONDS``, 0.5 s); the CPU time (``thread_time``) of the core and of the spool per
   period, ``BENCH_ENCRYPT_ROUNDS`` (3) rounds of each interleaved, medians. The
   extra cost of encryption is given per period, as a share of the core's own
   per-period cost measured in the same rounds, and as a share of the 20 ms period.
   Beside it, the two halves of a seal alone: ``pyrage.encrypt`` of a 0.5 s
   segment (32,000 bytes) and writing plus fsyncing the result.

Run: ``PYTHONPATH=. .venv/bin/python -m bench.api``.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyrage
import requests
import soundfile as sf

from firmware.catalog import COLUMNS, Catalog, _encode, rfc3339
from firmware.core import EndReason, InputLayout, Recorder, RecordingOptions, Start
from firmware.spool import Takes
from tests.broker import free_port
from tests.daemon_run import ROOT
from tests.daemon_run import Box as BoxFiles

from .calls import write_call

ROWS = int(os.environ.get("BENCH_API_ROWS", 100_000))
REQUESTS = int(os.environ.get("BENCH_API_REQUESTS", 500))
MEDIA_MB = int(os.environ.get("BENCH_MEDIA_MB", 50))
MEDIA_ROUNDS = int(os.environ.get("BENCH_MEDIA_ROUNDS", 9))
ENCRYPT_SECONDS = float(os.environ.get("BENCH_ENCRYPT_SECONDS", 600))
ENCRYPT_ROUNDS = int(os.environ.get("BENCH_ENCRYPT_ROUNDS", 3))
RATE = 16000
PERIOD = RATE // 50  # 20 ms
DAYS = 90
WALKS = 25
FOLLOWS = 20
MiB = 1 << 20
TOKEN = secrets.token_urlsafe(32)


def _pct(values, *qs: float) -> list[float]:
    return [float(v) for v in np.percentile(values, qs)]


# -- the catalog ------------------------------------------------------------------------------------


def fill_catalog(path: Path, spool: Path, count: int, media: Path, seed: int = 5) -> dict:
    """``count`` recordings over the last DAYS days, in one transaction; one of them is ``media``.

    Returns the ids, call ids and the id of the row that points at ``media``.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC) - timedelta(hours=1)
    times = sorted(now - timedelta(seconds=rng.uniform(0, DAYS * 86400)) for _ in range(count))
    boot = [secrets.token_hex(16) for _ in range(8)]
    option_sets = [
        RecordingOptions.from_mapping({"format": fmt, "sample_rate": sr, "channels": ch, "end_on_key": key}).to_dict()
        for fmt, sr, ch, key in [
            ("wav", 16000, "dual", ""),
            ("wav", 8000, "mono", ""),
            ("mp3", 16000, "dual", "#"),
            ("wav", 16000, "mono", "#"),
        ]
    ]
    rows, uploads, calls, files = [], [], [], []
    call = None
    media_at = count - 100
    for i, start in enumerate(times):
        if call is None or rng.random() < 0.6:  # 1 to 3 recordings per call
            call = "CA" + secrets.token_hex(16)
            calls.append(call)
        rid = "RE" + secrets.token_hex(16)
        options = rng.choice(option_sets)
        fmt, channels = options["format"], 2 if options["channels"] == "dual" else 1
        duration = round(rng.uniform(3, 900), 4)
        end = start + timedelta(seconds=duration)
        roll = rng.random()
        status = "completed" if roll < 0.88 else "deleted" if roll < 0.95 else "absent" if roll < 0.98 else "failed"
        if i == media_at:
            status = "completed"
        row = {
            "id": rid,
            "name": rid,
            "call_id": call,
            "source": rng.choice(("auto", "auto", "button", "api", "mqtt", "dtmf")),
            "status": status,
            "state": "finished",
            "end_reason": rng.choice(("call_end", "button", "stop", "end_on_key")),
            "key": None,
            "format": fmt,
            "sample_rate": options["sample_rate"],
            "channels": channels,
            "track": "both",
            "options": options,
            "date_created": rfc3339(start),
            "date_updated": rfc3339(end + timedelta(seconds=0.4)),
            "start_time": rfc3339(start),
            "end_time": rfc3339(end),
            "duration": duration,
            "size": int(duration * options["sample_rate"] * 2 * channels) + 44,
            "sha256": secrets.token_hex(32),
            "path": str(spool / f"{rid}.{fmt}"),
            "error_code": None,
            "error_message": None,
            "start_monotonic": rng.uniform(10, 1e6),
            "clock_synced": True,
            "boot_id": rng.choice(boot),
            "deleted_at": None,
        }
        if row["end_reason"] == "end_on_key":
            row["key"] = "#"
        if status == "deleted":
            row.update(path=None, deleted_at=rfc3339(end + timedelta(days=30)))
        elif status == "absent":
            row.update(path=None, size=0, sha256=None, duration=0.0, end_reason="no_input", state="no_input")
        elif status == "failed":
            row.update(state="error", error_code="storage", error_message="No space left on device (spool)")
        if i == media_at:
            row.update(
                path=str(media),
                format="wav",
                sample_rate=RATE,
                channels=2,
                size=media.stat().st_size,
                sha256=hashlib.sha256(media.read_bytes()).hexdigest(),
                options=option_sets[0],
            )
            media_id = rid
        elif row["path"]:
            files.append(row["path"])
        if status in ("completed", "deleted"):
            uploads.append(
                (rid, "https://uploads.example.com/recordings/", "done", 1, None, f"/{rid}", row["end_time"])
            )
        rows.append(_encode(row))
    catalog = Catalog(path)
    try:
        with catalog.transaction() as db:
            db.executemany(
                f"INSERT INTO recordings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                [[r.get(c) for c in COLUMNS] for r in rows],
            )
            db.executemany(
                "INSERT INTO uploads (recording_id, destination, state, attempts, last_error, location, date_updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                uploads,
            )
    finally:
        catalog.close()
    for name in files:  # start-up recovery marks completed rows whose file is gone as failed
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT, 0o640))
    return {"ids": [r["id"] for r in rows], "calls": calls, "media_id": media_id, "times": times}


def write_media(path: Path, call: Path, megabytes: int) -> None:
    """A 16 kHz stereo WAV of ``megabytes`` MB of samples: the call audio, repeated."""
    audio, _ = sf.read(call, dtype="int16", always_2d=True)
    frames = megabytes * 1_000_000 // 4
    sf.write(path, np.resize(audio, (frames, 2)), RATE, subtype="PCM_16")


# -- the daemon ---------------------------------------------------------------------------------


class Daemon:
    """``edge-recorder run`` on the filled catalog, its API on a loopback port."""

    def __init__(self, root: Path, call: Path) -> None:
        self.port = free_port()
        files = BoxFiles.make(
            root,
            np.zeros((RATE, 2), np.int16),
            RATE,
            http={"listen": f"127.0.0.1:{self.port}", "tokens": TOKEN},
            recording={"channels": "dual", "format": "wav", "sample_rate": RATE},
            sim={"pace": "realtime", "audio": str(call), "scenario": "1=button"},
        )
        self.config = files.config
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr = root / "daemon.stderr"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it; seconds until the API answered."""
        argv = [sys.executable, "-m", "firmware.cli.main", "run", "--config", str(self.config)]
        t0 = time.monotonic()
        with open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        deadline = t0 + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}): {self.stderr.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except requests.ConnectionError:
                pass
            time.sleep(0.02)
        raise RuntimeError("the API did not come up in 120 s")

    def alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"the daemon is gone: {self.stderr.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def problems(self) -> list[str]:
        return [
            line
            for line in self.stderr.read_text(errors="replace").splitlines()
            if " ERROR " in line or " WARNING " in line or "Traceback" in line
        ]


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    return session


# -- 1. list latency --------------------------------------------------------------------------------


def _timed(session: requests.Session, url: str, out: list[float]) -> dict:
    t0 = time.perf_counter()
    response = session.get(url, timeout=60)
    out.append((time.perf_counter() - t0) * 1000)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:300]}")
    return response.json()


def _with_query(url: str, **changes: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query)) | changes
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _window(rng: random.Random, times: list[datetime]) -> tuple[str, str]:
    first, last = times[0], times[-1] - timedelta(days=7)
    start = first + (last - first) * rng.random()
    return rfc3339(start), rfc3339(start + timedelta(days=7))


def list_latency(daemon: Daemon, filled: dict) -> dict:
    session = _session()
    base = daemon.url + "/v1/recordings"
    rng = random.Random(7)
    times: dict[str, list[float]] = {k: [] for k in ("health", "first", "deep", "bottom", "range", "call", "status")}
    by_depth: list[list[float]] = [[] for _ in range(FOLLOWS)]
    # a page near the end of the catalog, reached in pages of 1000 (those are timed too)
    big: list[float] = []
    page = _timed(session, base + "?page_size=1000", big)
    for _ in range(int(ROWS * 0.9) // 1000 - 1):
        page = _timed(session, daemon.url + page["meta"]["next_page_url"], big)
    bottom = daemon.url + _with_query(page["meta"]["next_page_url"], page_size="50")
    for _ in range(20):  # warm-up
        session.get(base + "?page_size=50", timeout=60)
    status_every = 5
    walk_every = max(1, REQUESTS // WALKS)
    for i in range(REQUESTS):
        _timed(session, daemon.url + "/v1/health", times["health"])
        first = _timed(session, base + "?page_size=50", times["first"])
        if len(first["recordings"]) != 50:
            raise RuntimeError("the first page is not 50 recordings")
        if len(_timed(session, bottom, times["bottom"])["recordings"]) != 50:
            raise RuntimeError("the page near the end is not 50 recordings")
        lo, hi = _window(rng, filled["times"])
        window = f"{base}?page_size=50&date_created=>={urllib.parse.quote(lo)}&date_created=<{urllib.parse.quote(hi)}"
        got = _timed(session, window, times["range"])["recordings"]
        if not got or not all(lo <= r["date_created"] < hi for r in got):
            raise RuntimeError(f"the date_created window {lo}..{hi} returned wrong rows")
        call = rng.choice(filled["calls"])
        got = _timed(session, f"{base}?page_size=50&call_id={call}", times["call"])["recordings"]
        if not all(r["call_id"] == call for r in got):
            raise RuntimeError("the call_id filter returned other calls")
        if i % status_every == 0:
            _timed(session, f"{base}?page_size=50&status=completed", times["status"])
        if i % walk_every == 0 and len(times["deep"]) < WALKS * FOLLOWS:
            page = first
            for depth in range(FOLLOWS):
                mark = len(times["deep"])
                page = _timed(session, daemon.url + page["meta"]["next_page_url"], times["deep"])
                by_depth[depth].append(times["deep"][mark])
        daemon.alive()
    metrics = session.get(daemon.url + "/metrics", timeout=10).text
    xruns = next((ln.split()[-1] for ln in metrics.splitlines() if ln.startswith("edge_recorder_xruns_total")), "?")
    return {"times": times, "by_depth": by_depth, "big": big, "bottom": bottom, "xruns": xruns}


# The arguments the API passes to Catalog.page for each kind.
def _page_args(filled: dict, bottom_url: str) -> dict[str, dict]:
    from firmware.frontends.http.server import _created_filters, _page_token

    token = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(bottom_url).query))["page_token"]
    lo, hi = _window(random.Random(11), filled["times"])
    return {
        "first": {},
        "bottom": {"after": _page_token(token)},
        "range": {
            "created": _created_filters({"date_created": f">={lo}"}) + _created_filters({"date_created": f"<{hi}"})
        },
        "call": {"call_id": filled["calls"][len(filled["calls"]) // 2]},
        "status": {"status": "completed"},
    }


class _Traced:
    """Stands in for a Catalog's connection and notes the statements run through it, with their arguments."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.calls = db, []

    def execute(self, sql: str, args=()):
        self.calls.append((sql, list(args)))
        return self.db.execute(sql, args)


def _median_ms(fn, repeat: int = 20) -> float:
    fn()
    spent = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        spent.append((time.perf_counter() - t0) * 1000)
    return float(np.median(spent))


def _plan(catalog: Catalog, sql: str, args: list) -> list[str]:
    return [r[3] for r in catalog.query("EXPLAIN QUERY PLAN " + sql, args)]


def query_plans(path: Path, filled: dict, bottom_url: str) -> dict[str, dict]:
    """Per kind, on a copy of the catalog: the SQL Catalog.page runs, its plan, and its time (ms, median of 20),
    alone and with Catalog.page's decoding; then two candidate fixes, timed the same way."""
    copy = path.with_name("copy.sqlite3")
    src, dst = sqlite3.connect(path), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    catalog = Catalog(copy)
    out: dict[str, dict] = {}
    try:
        for kind, args in _page_args(filled, bottom_url).items():
            real, catalog._db = catalog._db, _Traced(catalog._db)
            try:
                catalog.page(size=50, **args)
                sql, values = next(c for c in catalog._db.calls if c[0].lstrip().upper().startswith("SELECT"))
            finally:
                catalog._db = real
            out[kind] = {
                "sql": sql,
                "values": values,
                "plan": _plan(catalog, sql, values),
                "sql_ms": _median_ms(lambda sql=sql, values=values: catalog.query(sql, values)),
                "page_ms": _median_ms(lambda args=args: catalog.page(size=50, **args)),
            }
    finally:
        catalog.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(copy) + suffix).unlink(missing_ok=True)
    return out


# -- 2. media download ------------------------------------------------------------------------------

_STATIC = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""


def _serve(argv: list[str], url: str) -> subprocess.Popen:
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.head(url, timeout=1)
            return proc
        except requests.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{argv} did not come up")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _whole(session: requests.Session, url: str, digest: bool = False) -> tuple[float, int, str | None]:
    h = hashlib.sha256() if digest else None
    t0 = time.perf_counter()
    n = 0
    with session.get(url, stream=True, timeout=120) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code}")
        for chunk in response.iter_content(MiB):
            n += len(chunk)
            if h is not None:
                h.update(chunk)
    return time.perf_counter() - t0, n, h.hexdigest() if h else None


def _ranges(session: requests.Session, url: str, size: int, digest: bool = False) -> tuple[float, int, str | None]:
    h = hashlib.sha256() if digest else None
    t0 = time.perf_counter()
    n = 0
    for start in range(0, size, MiB):
        end = min(start + MiB, size) - 1
        response = session.get(url, headers={"Range": f"bytes={start}-{end}"}, timeout=60)
        if response.status_code != 206 or len(response.content) != end - start + 1:
            raise RuntimeError(f"GET {url} bytes={start}-{end}: {response.status_code}, {len(response.content)} bytes")
        n += len(response.content)
        if h is not None:
            h.update(response.content)
    return time.perf_counter() - t0, n, h.hexdigest() if h else None


def media_speed(daemon: Daemon, media: Path, media_id: str) -> dict:
    size = media.stat().st_size
    want = hashlib.sha256(media.read_bytes()).hexdigest()
    session = _session()
    static_port, plain_port = free_port(), free_port()
    static_url = f"http://127.0.0.1:{static_port}/{media.name}"
    plain_url = f"http://127.0.0.1:{plain_port}/{media.name}"
    api_url = f"{daemon.url}/v1/recordings/{media_id}.wav"
    servers = [
        _serve([sys.executable, "-c", _STATIC, str(media.parent), str(static_port)], static_url),
        _serve(
            [
                sys.executable,
                "-m",
                "http.server",
                str(plain_port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(media.parent),
            ],
            plain_url,
        ),
    ]
    cases = {
        "api whole": (daemon.proc.pid, lambda d: _whole(session, api_url, d)),
        "api ranges": (daemon.proc.pid, lambda d: _ranges(session, api_url, size, d)),
        "static whole": (servers[0].pid, lambda d: _whole(session, static_url, d)),
        "static ranges": (servers[0].pid, lambda d: _ranges(session, static_url, size, d)),
        "http.server whole": (servers[1].pid, lambda d: _whole(session, plain_url, d)),
    }
    try:
        for name, (_, run) in cases.items():  # once with a digest: every server sends the file exactly
            _, n, digest = run(True)
            if n != size or digest != want:
                raise RuntimeError(f"{name}: {n} bytes, sha256 {digest}, expected {size} bytes, {want}")
        speeds: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(MEDIA_ROUNDS):
            for name, (pid, run) in cases.items():
                before = _cpu(pid)
                seconds, n, _ = run(False)
                cpu[name].append((_cpu(pid) - before) * 1000)
                speeds[name].append(n / seconds / 1e6)
            daemon.alive()
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=10)
    return {"size": size, "speeds": speeds, "cpu": cpu}


# -- 3. encryption on the real-time path --------------------------------------------------------------


def feed_periods(audio: np.ndarray, spool: Path, recipient: str | None) -> dict:
    """One dual recording through the core and the spool; CPU seconds of each and the spool's per-period cost."""
    spool.mkdir(parents=True, exist_ok=True)
    core = Recorder(InputLayout(RATE, 2))
    takes = Takes(spool, RATE, file_names="id", sync_seconds=1.0, encrypt_to=recipient)
    options = {"channels": "dual", "end_on_silence": 0, "format": "wav", "sample_rate": RATE}
    for event in core.send(Start(RecordingOptions.from_mapping(options))):
        takes.handle(event)
    clock = time.thread_time
    core_cpu = spool_cpu = 0.0
    per_period = np.empty(len(audio) // PERIOD)
    for i in range(per_period.size):
        block = audio[i * PERIOD : (i + 1) * PERIOD]
        t0 = clock()
        events = core.feed(block)
        t1 = clock()
        for event in events:
            takes.handle(event)
        t2 = clock()
        core_cpu += t1 - t0
        spool_cpu += t2 - t1
        per_period[i] = (t2 - t1) * 1000
    takes_done = [takes.handle(e) for e in core.close(EndReason.CALL_END)]
    written = next(t for t in takes_done if t is not None).written
    size = written.path.stat().st_size
    shutil.rmtree(spool)
    return {"core": core_cpu, "spool": spool_cpu, "periods": per_period.size, "per_period": per_period, "size": size}


def seal_parts(tmp: Path, count: int = 1000) -> dict[str, np.ndarray]:
    """CPU ms of pyrage.encrypt of one 0.5 s segment (32,000 bytes), and CPU and wall ms of writing and
    fsyncing it (what a plain part's sync also does, in smaller writes)."""
    recipients = [pyrage.x25519.Recipient.from_str(str(pyrage.x25519.Identity.generate().to_public()))]
    data = os.urandom(RATE * 2)
    path = tmp / "seal.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    out = np.empty((count, 3))
    try:
        for i in range(count):
            c0 = time.thread_time()
            blob = pyrage.encrypt(data, recipients)
            c1, w1 = time.thread_time(), time.perf_counter()
            os.write(fd, blob)
            os.fsync(fd)
            out[i] = ((c1 - c0) * 1000, (time.thread_time() - c1) * 1000, (time.perf_counter() - w1) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return {"encrypt": out[:, 0], "fsync cpu": out[:, 1], "fsync wall": out[:, 2]}


def encryption_cost(call: Path, tmp: Path) -> dict:
    audio, _ = sf.read(call, dtype="int16", always_2d=True)
    audio = np.ascontiguousarray(audio[: int(ENCRYPT_SECONDS * RATE)])
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    runs: dict[str, list[dict]] = {"plain": [], "encrypted": []}
    for r in range(ENCRYPT_ROUNDS):
        for mode in ("plain", "encrypted"):
            runs[mode].append(feed_periods(audio, tmp / f"enc-{mode}-{r}", recipient if mode == "encrypted" else None))
    return runs


# -- report -----------------------------------------------------------------------------------------


def main() -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        call = tmp / "call.wav"
        seconds = max(ENCRYPT_SECONDS, 600.0)
        print(f"api: making {seconds / 60:.0f} min of 2-channel 16 kHz call audio ...", flush=True)
        write_call(call, seconds, RATE)
        root = tmp / "box"
        spool = root / "spool"
        spool.mkdir(parents=True)
        media = spool / f"bench-{MEDIA_MB}MB.wav"
        write_media(media, call, MEDIA_MB)
        t0 = time.monotonic()
        filled = fill_catalog(root / "catalog.sqlite3", spool, ROWS, media)
        print(
            f"catalog: {ROWS:,} recordings over {DAYS} days, one transaction plus files: {time.monotonic() - t0:.1f} s"
        )
        daemon = Daemon(root, call)
        try:
            up = daemon.start()
            print(f"daemon start to the API answering, {ROWS:,} rows in the catalog: {up:.2f} s", flush=True)
            lists = list_latency(daemon, filled)
            media_result = media_speed(daemon, media, filled["media_id"])
        finally:
            daemon.stop()
        problems = daemon.problems()
        with sqlite3.connect(root / "catalog.sqlite3") as db:
            audited = db.execute("SELECT COUNT(*) FROM audit WHERE action = 'download'").fetchone()[0]
        plans = query_plans(root / "catalog.sqlite3", filled, lists["bottom"])

        print(f"\nGET /v1/recordings, {ROWS:,} rows, page_size=50, client round trip in ms (target: p99 under 50 ms):")
        labels = {
            "health": "baseline: GET /v1/health",
            "first": "first page",
            "deep": f"pages 2-{FOLLOWS + 1} via next_page_url",
            "bottom": f"page at row ~{int(ROWS * 0.9):,} (next_page_url)",
            "range": "date_created 7-day window",
            "call": "call_id filter",
            "status": "status=completed",
        }
        for kind, label in labels.items():
            ms = lists["times"][kind]
            p50, p99 = _pct(ms, 50, 99)
            flag = "  MISSED" if p99 >= 50 and kind != "health" else ""
            print(f"  {label:40s} n={len(ms):4d}  p50 {p50:7.2f}  p99 {p99:7.2f}  max {max(ms):7.2f}{flag}")
        depth = [float(np.median(d)) for d in lists["by_depth"]]
        print(f"  by depth (median): page 2 {depth[0]:.2f} ms, page {FOLLOWS + 1} {depth[-1]:.2f} ms")
        p50, p99 = _pct(lists["big"], 50, 99)
        print(
            f"  page_size=1000 (the walk to row {int(ROWS * 0.9):,}), n={len(lists['big'])}: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        print(f"  capture overruns in the daemon during the run: {lists['xruns']}")
        print(
            "the SQL of each kind on a copy of the catalog (ms, median of 20; Catalog.page = SQL + decoding 51 rows):"
        )
        for kind, plan in plans.items():
            print(
                f"  {kind:7s} SQL {plan['sql_ms']:7.2f}, Catalog.page {plan['page_ms']:7.2f}: {' / '.join(plan['plan'])}"
            )

        speeds = media_result["speeds"]
        print(
            f"\nmedia, a {media_result['size'] / 1e6:.0f} MB WAV on loopback (MB/s, median of {MEDIA_ROUNDS}; "
            "CPU ms of the serving process per download, mean; the daemon's recording included):"
        )
        for name, values in speeds.items():
            cpu_ms = np.mean(media_result["cpu"][name])
            print(
                f"  {name:18s} {np.median(values):8.0f}  ({min(values):.0f}-{max(values):.0f}), server CPU {cpu_ms:.0f} ms"
            )
        for kind in ("whole", "ranges"):
            ratio = np.median(speeds[f"api {kind}"]) / np.median(speeds[f"static {kind}"])
            print(f"  API / aiohttp static, {kind}: {ratio:.2f}")
        print(f"  audit rows (action download) the daemon wrote, one per media request: {audited:,}")

        print(
            f"\nencryption, {ENCRYPT_SECONDS:.0f} s of 16 kHz stereo, 20 ms periods, median of {ENCRYPT_ROUNDS} rounds:"
        )
        runs = encryption_cost(call, tmp)
        n = runs["plain"][0]["periods"]
        core_us = float(np.median([r["core"] for mode in runs.values() for r in mode])) / n * 1e6
        plain_us = float(np.median([r["spool"] for r in runs["plain"]])) / n * 1e6
        enc_us = float(np.median([r["spool"] for r in runs["encrypted"]])) / n * 1e6
        extra = enc_us - plain_us
        print(f"  core per period (CPU):                  {core_us:7.1f} us")
        print(f"  spool per period, plain PartFile:       {plain_us:7.1f} us")
        print(f"  spool per period, EncryptedPart:        {enc_us:7.1f} us")
        print(f"  extra for encryption:                   {extra:7.1f} us per period")
        print(
            f"    = {extra / core_us * 100:.1f} % of the core's per-period cost, {extra / 20000 * 100:.2f} % of 20 ms"
        )
        for mode in ("plain", "encrypted"):
            periods = np.concatenate([r["per_period"] for r in runs[mode]])
            p50, p99 = _pct(periods, 50, 99)
            top = float(periods.max())
            sealing = np.sort(periods)[-len(periods) // 50 :]  # one period in 50 syncs (or seals)
            print(
                f"  {mode:9s} spool per period: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {top:.3f} ms; "
                f"the costliest 2 % (the syncs) median {np.median(sealing):.3f} ms"
            )
        for name, values in seal_parts(tmp).items():
            p50, p99 = _pct(values, 50, 99)
            what = "pyrage.encrypt of a 0.5 s segment, CPU" if name == "encrypt" else f"write + fsync of it, {name[6:]}"
            print(f"  {what:40s} p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {values.max():.3f} ms (n={values.size})")
        sizes = {mode: int(np.median([r["size"] for r in rs])) for mode, rs in runs.items()}
        print(
            f"  file size: plain {sizes['plain']:,} B, encrypted {sizes['encrypted']:,} B "
            f"({(sizes['encrypted'] / sizes['plain'] - 1) * 100:+.2f} %)"
        )
        if problems:
            print(f"\ndaemon warnings/errors ({len(problems)}):")
            for line in problems[:10]:
                print(f"  {line[:200]}")
        print(f"\napi: the whole run took {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
