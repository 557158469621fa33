"""Downloading a release bundle (firmware/update/download.py) from a real HTTPS server on loopback.

``ReleaseServer`` serves files over TLS with a certificate the test makes (its own CA, passed as
``ca_file``), answers ``Range`` and ``If-Range`` as a web server does, and misbehaves on request:
it cuts the connection after so many bytes, stalls, ignores ranges or If-Range, redirects, sends
chunked bodies slowly or claims a huge Content-Length. What it saw and sent is in ``requests``.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
import threading
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from firmware.update import Reason, Refused, signing
from firmware.update.download import (
    CHUNK,
    MAX_URL,
    PROGRESS_INTERVAL,
    PROGRESS_STEP,
    ContentRange,
    DownloadRequest,
    download,
    download_release,
    parse_content_range,
    parse_request,
)

from .release_server import Certificates, ReleaseServer, make_certificates

FAST = (0.01, 0.01, 0.01)  # retry waits: the tests count tries, not seconds


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def server(certificates, tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    running = ReleaseServer(certificates, folder).start()
    yield running
    running.stop()


@pytest.fixture
def box(tmp_path) -> Path:
    """Where the box puts what it downloads."""
    folder = tmp_path / "box"
    folder.mkdir()
    return folder


def get(server: ReleaseServer, url: str, to: Path, data: bytes | None = None, **options) -> Path:
    """``download`` as the daemon calls it, trusting the test's CA."""
    options.setdefault("sha256", hashlib.sha256(data).hexdigest() if data is not None else "0" * 64)
    options.setdefault("max_bytes", 1 << 30)
    options.setdefault("retries", FAST)
    options.setdefault("timeout", 5.0)
    return download(url, to, ca_file=server.certificates.ca, **options)


def random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(0, size, 1 << 20):
            block = os.urandom(min(1 << 20, size - f.tell()))
            f.write(block)
            digest.update(block)
    return digest.hexdigest()


def part_of(to: Path) -> Path:
    return to.with_name(to.name + ".part")


# -- downloads ---------------------------------------------------------------------------------------------


def test_a_bundle_is_downloaded_whole_and_renamed_once_its_sha256_holds(server, box):
    data = os.urandom(300_000)
    url = server.publish("r/b.tar", data)
    to = box / "b.tar"

    assert get(server, url, to, data) == to

    assert to.read_bytes() == data
    assert sorted(p.name for p in box.iterdir()) == ["b.tar"]  # no .part, no record left
    assert server.requests[0].headers.get("range") is None
    assert server.requests[0].headers["accept-encoding"] == "identity"


def test_a_dropped_connection_is_resumed_with_range_and_only_the_rest_is_sent(server, box):
    data = os.urandom(5 * CHUNK + 123)
    url = server.publish("b.tar", data, etag='"abc"')
    server.drops.append(2 * CHUNK + 10)

    get(server, url, box / "b.tar", data)

    first, second = server.requests
    assert (first.status, first.sent) == (200, 2 * CHUNK + 10)
    assert second.headers["range"] == f"bytes={2 * CHUNK + 10}-"
    assert second.headers["if-range"] == '"abc"'
    assert (second.status, second.sent) == (206, len(data) - (2 * CHUNK + 10))
    assert (box / "b.tar").read_bytes() == data


def test_a_server_that_answers_a_range_with_200_is_taken_from_the_start(server, box):
    data = os.urandom(4 * CHUNK)
    url = server.publish("b.tar", data)
    server.drops.append(CHUNK + 7)
    server.ignore_range = True

    get(server, url, box / "b.tar", data)

    assert server.statuses_sent() == [200, 200]
    assert server.requests[1].headers["range"] == f"bytes={CHUNK + 7}-"
    assert server.requests[1].sent == len(data)
    assert (box / "b.tar").read_bytes() == data


def test_a_file_changed_on_the_server_comes_whole_instead_of_spliced(server, box):
    old, new = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK)
    url = server.publish("b.tar", old, etag='"v1"')
    server.drops.append(CHUNK)
    server.on_drop = lambda: server.publish("b.tar", new, etag='"v2"')

    get(server, url, box / "b.tar", new)

    assert server.requests[1].headers["if-range"] == '"v1"'
    assert server.statuses_sent() == [200, 200]  # If-Range did not match: the whole new file
    assert (box / "b.tar").read_bytes() == new


def test_a_206_of_another_version_is_not_appended_even_when_the_server_ignores_if_range(server, box):
    old, new = os.urandom(4 * CHUNK), os.urandom(4 * CHUNK)
    url = server.publish("b.tar", old, etag='"v1"')
    server.drops.append(CHUNK)
    server.on_drop = lambda: server.publish("b.tar", new, etag='"v2"')
    server.honour_if_range = False

    get(server, url, box / "b.tar", new)

    assert server.statuses_sent() == [200, 206, 200]
    assert "range" not in server.requests[2].headers
    assert (box / "b.tar").read_bytes() == new


def test_a_206_that_does_not_start_where_the_part_ends_is_not_appended(server, box):
    data = os.urandom(4 * CHUNK)
    url = server.publish("b.tar", data)
    server.drops.append(CHUNK)
    server.misplace = 100

    get(server, url, box / "b.tar", data)

    assert server.statuses_sent() == [200, 206, 200]
    assert "range" not in server.requests[2].headers
    assert (box / "b.tar").read_bytes() == data


def test_a_complete_part_answered_416_is_checked_by_its_hash_and_kept(server, box):
    data = os.urandom(100_000)
    url = server.publish("b.tar", data)
    part_of(box / "b.tar").write_bytes(data)  # all there, but never renamed (the box lost power)

    get(server, url, box / "b.tar", data)

    assert [(r.headers["range"], r.status, r.sent) for r in server.requests] == [("bytes=100000-", 416, 0)]
    assert (box / "b.tar").read_bytes() == data
    assert not part_of(box / "b.tar").exists()


def test_a_wrong_sha256_is_refused_and_the_part_deleted(server, box):
    url = server.publish("b.tar", os.urandom(200_000))

    with pytest.raises(Refused) as refused:
        get(server, url, box / "b.tar", sha256=hashlib.sha256(b"another bundle").hexdigest())

    assert refused.value.reason is Reason.TAMPERED
    assert "sha256" in str(refused.value)
    assert list(box.iterdir()) == []


def test_retries_are_bounded_and_keep_what_arrived(server, box):
    data = os.urandom(8 * CHUNK)
    url = server.publish("b.tar", data)
    server.drops.extend([CHUNK] * 10)

    with pytest.raises(Refused) as refused:
        get(server, url, box / "b.tar", data, retries=(0.01, 0.01))

    assert refused.value.reason is Reason.TRUNCATED
    assert "3 tries" in str(refused.value)
    assert len(server.requests) == 3
    assert part_of(box / "b.tar").stat().st_size == 3 * CHUNK  # each try added its chunk
    server.drops.clear()
    get(server, url, box / "b.tar", data)  # and a later command continues
    assert server.requests[-1].headers["range"] == f"bytes={3 * CHUNK}-"
    assert (box / "b.tar").read_bytes() == data


def test_a_server_error_is_tried_again_and_a_missing_file_is_not(server, box):
    data = os.urandom(1000)
    url = server.publish("b.tar", data)
    server.statuses.extend([503, 502])

    get(server, url, box / "b.tar", data)
    assert server.statuses_sent() == [503, 502, 200]

    with pytest.raises(Refused) as refused:
        get(server, f"{server.base}/gone.tar?token=s3cret", box / "gone.tar")
    assert refused.value.reason is Reason.MISSING
    assert str(refused.value).startswith(f"{server.base}/gone.tar answered 404")
    assert "s3cret" not in str(refused.value)
    assert len(server.requests) == 4


# -- bounds --------------------------------------------------------------------------------------------


def test_a_content_length_over_the_limit_is_refused_before_the_body(server, box):
    server.claims["/huge.tar"] = 10**12

    started = time.monotonic()
    with pytest.raises(Refused) as refused:
        get(server, f"{server.base}/huge.tar", box / "b.tar", max_bytes=100 << 20)

    assert refused.value.reason is Reason.TOO_LARGE
    assert "953674.3 MB, more than the 100.0 MB the box takes" in str(refused.value)
    assert time.monotonic() - started < 2
    assert list(box.iterdir()) == []


def test_a_body_growing_past_the_limit_is_cut_off(server, box):
    url = server.publish("b.tar", os.urandom(16 * CHUNK))
    server.chunked = True  # no Content-Length to refuse up front

    with pytest.raises(Refused) as refused:
        get(server, url, box / "b.tar", max_bytes=4 * CHUNK)

    assert refused.value.reason is Reason.TOO_LARGE
    assert "stopped reading" in str(refused.value)
    assert list(box.iterdir()) == []


def test_no_room_beside_the_recordings_is_refused_up_front(server, box):
    data = os.urandom(10 * CHUNK)
    url = server.publish("b.tar", data)

    with pytest.raises(Refused) as refused:
        get(server, url, box / "b.tar", data, room=lambda: len(data) - 1)

    assert refused.value.reason is Reason.NO_SPACE
    assert list(box.iterdir()) == []


def test_room_running_out_during_the_download_stops_it_and_frees_the_part(server, box):
    data = os.urandom(16 * CHUNK)
    url = server.publish("b.tar", data)
    server.chunked = True  # the size is not known up front
    part = part_of(box / "b.tar")
    seen = []

    def room() -> int:  # the card, with 5 chunks free beyond the recordings' reserve
        used = part.stat().st_size if part.exists() else 0
        seen.append(used)
        return 5 * CHUNK - used

    with pytest.raises(Refused) as refused:
        get(server, url, box / "b.tar", data, room=room)

    assert refused.value.reason is Reason.NO_SPACE
    assert max(seen) == 5 * CHUNK  # it never went past the reserve
    assert list(box.iterdir()) == []


def test_memory_stays_bounded_for_a_large_bundle_and_progress_is_told_a_few_times(server, box, tmp_path):
    size = 64 << 20
    sha256 = random_file(tmp_path / "big.tar", size)
    url = server.publish("big.tar", tmp_path / "big.tar")
    told = []

    tracemalloc.start()
    try:
        get(server, url, box / "big.tar", sha256=sha256, progress=lambda got, total: told.append((got, total)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < 4 << 20, f"peak {peak / (1 << 20):.1f} MiB for a 64 MiB bundle"
    assert (box / "big.tar").stat().st_size == size
    assert 2 <= len(told) <= 1 / PROGRESS_STEP + 2, told
    assert told[0] == (0, size) and told[-1] == (size, size)
    assert [got for got, _ in told] == sorted(got for got, _ in told)


def test_progress_of_a_slow_download_is_told_at_most_a_few_times_a_second(server, box):
    data = os.urandom(16 * CHUNK)
    url = server.publish("b.tar", data)
    server.chunked, server.piece, server.pause = True, 16 << 10, 0.01  # 64 pieces, ~0.7 s, size unknown
    told = []

    started = time.monotonic()
    get(server, url, box / "b.tar", data, progress=lambda got, total: told.append((got, total)))
    elapsed = time.monotonic() - started

    # Without the limit it would be told once per chunk read: 16 times.
    assert 3 <= len(told) <= elapsed / PROGRESS_INTERVAL + 2, (told, elapsed)
    assert told[0] == (0, None) and told[-1] == (len(data), len(data))


# -- refusals -----------------------------------------------------------------------------------------


def test_plain_http_is_refused_without_connecting(server, box):
    port = server.base.rpartition(":")[2]

    with pytest.raises(Refused) as refused:
        get(server, f"http://127.0.0.1:{port}/b.tar?token=s3cret", box / "b.tar")

    assert refused.value.reason is Reason.DOWNLOAD
    assert str(refused.value) == (
        f"cannot download http://127.0.0.1:{port}/b.tar: url must be an https:// URL, not http://: "
        "the box downloads updates over HTTPS only"
    )
    assert server.requests == []


def test_a_redirect_is_followed_to_https_and_refused_to_http(server, box):
    data = os.urandom(1000)
    server.publish("r/b.tar", data)
    server.redirects["/latest.tar"] = "/r/b.tar"
    server.redirects["/old.tar"] = f"http://127.0.0.1:{server.base.rpartition(':')[2]}/r/b.tar?sig=s3cret"

    get(server, f"{server.base}/latest.tar", box / "b.tar", data)
    assert (box / "b.tar").read_bytes() == data
    with pytest.raises(Refused) as refused:
        get(server, f"{server.base}/old.tar", box / "old.tar", data)

    assert refused.value.reason is Reason.DOWNLOAD
    assert "redirected to http://127.0.0.1" in str(refused.value)
    assert "HTTPS only" in str(refused.value) and "s3cret" not in str(refused.value)
    assert [r.path for r in server.requests] == ["/latest.tar", "/r/b.tar", "/old.tar"]


def test_a_server_the_ca_does_not_vouch_for_is_refused_at_once(server, box):
    url = server.publish("b.tar", b"x")

    with pytest.raises(Refused) as refused:
        download(url, box / "b.tar", sha256="0" * 64, max_bytes=1 << 20, retries=FAST)  # the system's CAs

    assert refused.value.reason is Reason.DOWNLOAD
    assert "certificate verify failed" in str(refused.value)
    assert server.requests == []


def test_stop_ends_a_stalled_download_at_once_and_keeps_the_part_for_the_next_try(server, box):
    data = os.urandom(8 * CHUNK)
    url = server.publish("b.tar", data)
    server.stalls.append(2 * CHUNK)
    part, stop, stopped_at = part_of(box / "b.tar"), threading.Event(), []

    def stop_once_two_chunks_are_in() -> None:
        server.stalling.wait(5)
        deadline = time.monotonic() + 5
        while (not part.exists() or part.stat().st_size < 2 * CHUNK) and time.monotonic() < deadline:
            time.sleep(0.005)
        stopped_at.append(time.monotonic())
        stop.set()

    threading.Thread(target=stop_once_two_chunks_are_in, daemon=True).start()
    with pytest.raises(Refused) as refused:
        get(server, url, box / "b.tar", data, stop=stop, timeout=30.0)

    assert time.monotonic() - stopped_at[0] < 0.5  # not the 30 s read timeout
    assert refused.value.reason is Reason.CANCELLED
    assert "b.tar.part is kept to resume" in str(refused.value)
    assert part.stat().st_size == 2 * CHUNK

    server.released.set()
    get(server, url, box / "b.tar", data)
    assert server.requests[-1].headers["range"] == f"bytes={2 * CHUNK}-"
    assert server.requests[-1].sent == len(data) - 2 * CHUNK
    assert (box / "b.tar").read_bytes() == data


def test_a_part_kept_for_another_release_is_not_continued(server, box):
    old, new = os.urandom(8 * CHUNK), os.urandom(8 * CHUNK)
    url = server.publish("latest.tar", old, etag='"v1"')
    server.stalls.append(2 * CHUNK)
    stop = threading.Event()

    def stop_when_stalled() -> None:
        server.stalling.wait(5)
        time.sleep(0.1)
        stop.set()

    threading.Thread(target=stop_when_stalled, daemon=True).start()
    with pytest.raises(Refused):
        get(server, url, box / "b.tar", old, stop=stop)
    server.released.set()
    assert part_of(box / "b.tar").stat().st_size > 0

    server.publish("latest.tar", new, etag='"v1"')  # the same URL and ETag: only the sha256 tells
    get(server, url, box / "b.tar", new)

    assert "range" not in server.requests[-1].headers
    assert (box / "b.tar").read_bytes() == new


def test_the_signature_is_fetched_first_and_beside_the_bundle(server, box):
    data, signature = os.urandom(50_000), b"untrusted comment: signature from minisign secret key\n..."
    server.publish("r/b.tar", data)
    server.publish("r/b.tar.minisig", signature)
    request = parse_request({"url": f"{server.base}/r/b.tar?token=t", "sha256": hashlib.sha256(data).hexdigest()})

    got = download_release(request, box / "b.tar", max_bytes=1 << 20, ca_file=server.certificates.ca, retries=FAST)

    assert got == box / "b.tar" and got.read_bytes() == data
    assert signing.signature_path(got).read_bytes() == signature
    assert [r.path for r in server.requests] == ["/r/b.tar.minisig?token=t", "/r/b.tar?token=t"]


def test_a_missing_or_oversized_signature_stops_before_the_bundle(server, box):
    data = os.urandom(1000)
    server.publish("b.tar", data)
    request = parse_request({"url": f"{server.base}/b.tar", "sha256": hashlib.sha256(data).hexdigest()})
    fetch = dict(max_bytes=1 << 20, ca_file=server.certificates.ca, retries=FAST)

    with pytest.raises(Refused) as missing:
        download_release(request, box / "b.tar", **fetch)
    server.publish("b.tar.minisig", b"x" * (signing.MAX_SIGNATURE_BYTES + 1))
    with pytest.raises(Refused) as oversized:
        download_release(request, box / "b.tar", **fetch)

    assert (missing.value.reason, oversized.value.reason) == (Reason.MISSING, Reason.TOO_LARGE)
    assert [r.path for r in server.requests] == ["/b.tar.minisig", "/b.tar.minisig"]
    assert list(box.iterdir()) == []


# -- the command's fields ----------------------------------------------------------------------------------

SHA = "ab" * 32


def test_the_signature_url_defaults_to_the_bundle_url_with_minisig_before_the_query():
    request = parse_request({"url": "https://h.example/p/b.tar?x=1&token=t", "sha256": SHA.upper(), "op": "update"})

    assert request == DownloadRequest(
        "https://h.example/p/b.tar?x=1&token=t", SHA, "https://h.example/p/b.tar.minisig?x=1&token=t"
    )
    assert (
        parse_request(
            {"url": "https://h.example/b.tar", "sha256": SHA, "signature_url": "https://s.example/sig"}
        ).signature_url
        == "https://s.example/sig"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sha256": SHA}, "url is missing"),
        ({"url": 7, "sha256": SHA}, "url must be a string, not a number"),
        ({"url": "https://h.example/b.tar", "sha256": "abc"}, "sha256 is not a SHA-256 (3 characters)"),
        ({"url": "https://h.example/b.tar", "sha256": "g" * 64}, "a character that is not a hex digit"),
        ({"url": "https://h.example/b.tar"}, "sha256 is missing"),
        ({"url": "ftp://h.example/b.tar", "sha256": SHA}, "url must be an https:// URL, not ftp://"),
        ({"url": "h.example/b.tar", "sha256": SHA}, "not a URL without a scheme"),
        ({"url": "https:///b.tar", "sha256": SHA}, "url has no host"),
        ({"url": "https://u:p@h.example/b.tar", "sha256": SHA}, "must not hold a user name or password"),
        ({"url": "https://h.example/b c.tar", "sha256": SHA}, "a space or a control character at position 19"),
        ({"url": "https://h.example/b\n.tar", "sha256": SHA}, "a space or a control character"),
        ({"url": "https://h.example/bé.tar", "sha256": SHA}, "not ASCII at position 19"),
        ({"url": "https://h.example/" + "a" * MAX_URL, "sha256": SHA}, f"at most {MAX_URL} are taken"),
        ({"url": "https://h.example:99999/b.tar", "sha256": SHA}, "url is not a URL"),
        ({"url": "https://h.example/r/", "sha256": SHA}, "give signature_url"),
        (
            {"url": "https://h.example/b.tar", "sha256": SHA, "signature_url": "http://h.example/s"},
            "signature_url must be an https:// URL",
        ),
        ("update", "must be a JSON object"),
    ],
)
def test_unusable_fields_are_refused_with_a_message_naming_them(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_request(fields)


#: What URLs are made of; a text of anything at all, and a few characters no URL may hold, come in below.
_URL_TEXT = st.text(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%", max_size=20)
_URLS = st.builds(
    lambda scheme, user, host, port, path, query: f"{scheme}{user}{host}{port}{path}{query}",
    st.sampled_from(["https://", "HTTPS://", "http://", "", "https:", "https:///"]),
    st.sampled_from(["", "", "", "u@", "u:p@", "@"]),
    st.sampled_from(["h.example", "127.0.0.1", "[::1]", "xn--bcher-kva.example", "a-b.example.", "h_x.example"])
    | st.sampled_from(["[::1", "[v1.x]", "h..x", "-h", "", "h/x", "1.2.3.4.5"])
    | _URL_TEXT
    | st.text(max_size=8),
    st.sampled_from(["", "", "", ":443", ":0", ":x", ":99999", ":"]),
    st.sampled_from(["", "/", "/b.tar", "/r/", "/a b", "/é"]) | _URL_TEXT.map(lambda t: "/" + t),
    st.sampled_from(["", "?x=1", "?", "#f", "?a=1#f"]) | _URL_TEXT.map(lambda t: "?" + t),
)
_NEAR_GOOD_URLS = st.builds(
    lambda host, path, query: f"https://{host}/{path}{query}",
    st.sampled_from(["h.example", "127.0.0.1:8443", "[::1]", "xn--bcher-kva.example"]),
    _URL_TEXT,
    st.sampled_from(["", "?x=1"]) | _URL_TEXT.map(lambda t: "?" + t),
)
_URLISH = st.one_of(st.text(max_size=80), _URLS, _NEAR_GOOD_URLS)
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.lists(st.integers(), max_size=2), _URLISH)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.one_of(
        st.fixed_dictionaries(
            {
                "url": _URLISH,
                "sha256": st.one_of(st.just(SHA), st.text(alphabet="0123456789abcdefABCDEFg ", max_size=66), _VALUES),
            },
            optional={"signature_url": st.one_of(_URLISH, _VALUES), "op": _VALUES},
        ),
        st.dictionaries(st.text(max_size=15), _VALUES, max_size=4),
        _VALUES,
    )
)
@example(fields={"url": "https://[::1/b.tar", "sha256": SHA})
@example(fields={"url": "https://h.example:x/b.tar", "sha256": SHA})
def test_any_command_fields_give_a_request_or_a_value_error(fields):
    try:
        request = parse_request(fields)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    for url in (request.url, request.signature_url):
        assert url.lower().startswith("https://") and "@" not in urlsplit(url).netloc and urlsplit(url).hostname
        assert url.isascii() and not any(c.isspace() or not c.isprintable() for c in url)
    assert re.fullmatch("[0-9a-f]{64}", request.sha256)
    again = parse_request({"url": request.url, "sha256": request.sha256, "signature_url": request.signature_url})
    assert again == request


@settings(max_examples=250, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(r"\A *[bB]ytes ([0-9*]{1,20}-?[0-9]{0,20}/[0-9*]{1,20}) *\Z")))
@example("bytes ١٢-٣/4")  # digits int() takes and HTTP does not
@example("bytes 1_0-2/3")
def test_any_content_range_gives_a_range_or_a_value_error(value):
    try:
        span = parse_content_range(value)
    except ValueError:
        return
    if span.first is None:
        assert span.last is None and span.total is not None
    else:
        assert 0 <= span.first <= span.last and (span.total is None or span.last < span.total)


@given(st.integers(0, 10**15), st.integers(0, 10**15), st.integers(1, 10**15) | st.none())
def test_a_well_formed_content_range_reads_back_as_written(first, length, total):
    last = first + length
    if total is not None and last >= total:
        total = last + 1
    text = f"bytes {first}-{last}/{'*' if total is None else total}"
    assert parse_content_range(text) == ContentRange(first, last, total)
    assert parse_content_range(f"bytes */{first}") == ContentRange(None, None, first)
