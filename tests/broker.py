"""A real Mosquitto broker for tests, on a free loopback port.

``Broker(tmp_path).start()`` writes a config into the test's directory and runs
``/usr/sbin/mosquitto`` (installed by ``.ci/run`` and ``run.sh``). It can be
stopped and started again on the same port (an outage), with persistence on or
off, and with password and ACL files when a test checks authorisation.
"""

from __future__ import annotations

import getpass
import queue
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request_reply(client, topic: str, payload: bytes | str, correlation: bytes, timeout: float = 10.0):
    """Publish a command on ``topic`` with an MQTT 5 response topic and ``correlation``; the reply message.

    ``client`` is a connected paho client whose network loop runs. Raises queue.Empty after ``timeout``.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    reply_to = f"central/replies/{uuid.uuid4().hex}"
    got: queue.Queue = queue.Queue()
    client.message_callback_add(reply_to, lambda c, u, m: got.put(m))
    client.subscribe(reply_to, qos=1)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = reply_to
    props.CorrelationData = correlation
    client.publish(topic, payload, qos=1, properties=props)
    message = got.get(timeout=timeout)
    assert message.properties.CorrelationData == correlation
    return message


class Broker:
    def __init__(
        self,
        directory: Path,
        *,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.persistence = persistence
        self.users = users
        self.acl = acl
        self.tls = tls
        self.ca_file: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.log = self.directory / "mosquitto.log"

    def _config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.directory}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            # as root, mosquitto would switch to its own user and could not write the test's directory
            f"user {getpass.getuser()}",
        ]
        if self.tls:
            self.ca_file, cert, key = _certificates(self.directory)
            lines += [f"cafile {self.ca_file}", f"certfile {cert}", f"keyfile {key}"]
        if self.users:
            passwd = self.directory / "passwd"
            passwd.write_text("".join(f"{user}:{password}\n" for user, password in self.users.items()))
            passwd.chmod(0o600)
            subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True)
            lines += [f"password_file {passwd}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if self.acl is not None:
            acl = self.directory / "acl"
            acl.write_text(self.acl)
            acl.chmod(0o600)
            lines.append(f"acl_file {acl}")
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> Broker:
        config = self._config()
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-1000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    if cert.exists():
        return ca, cert, key
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    key.chmod(0o644)
    return ca, cert, key
