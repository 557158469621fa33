"""First-boot provisioning: the installer's config from the boot partition into /etc/edge-recorder.

Theory of operation
-------------------
Whoever sets a box up has the SD card, not a shell: right after flashing, the
card's FAT boot partition (``/boot/firmware`` on Raspberry Pi OS Bookworm,
``/boot`` before it) can be written from any computer. They put
``edge-recorder.toml`` there, and may add a folder ``edge-recorder/`` holding the
files the config names: TLS certificates and keys (``*.pem``, ``*.crt``,
``*.key``), the encryption public key ``encryption.pub``, files for ``file:``
secrets. At boot ``edge-recorder-provision.service`` runs ``edge-recorder
provision`` before the daemon starts, and only when that file is there.

The file on the boot partition is a request, ``/etc/edge-recorder`` is the state,
and the answer goes to two places: the boot partition, for the installer who pulls
the card, and a marker file, for the daemon, which shows it with the LED and MQTT.

- Everything is checked before anything is written: the config against the schema
  (``firmware.config``), every file it names present, certificates and keys in
  PEM, the encryption key a usable age recipient, and an ``encryption.pub`` that
  the config really uses (else recordings would silently stay unencrypted). Paths
  and ``file:`` values under /etc/edge-recorder are looked up in ``edge-recorder/``
  first, where they come from, then in the box's /etc/edge-recorder (an earlier
  provisioning may have put them there). A check on another computer
  (``provision --check``, ``fresh_box``) skips the second place: that computer's
  /etc/edge-recorder is not the box's, and a fresh box has nothing there yet.
- Good: each file is written beside its destination, fsynced and renamed over it
  (mode 0640, root:edge-recorder: readable by the daemon and root only), the
  config last. Only then are the copies on the boot partition overwritten with
  zeros and removed, since anyone holding the card can read a FAT partition (the
  zeros take the secrets out of the file system's free space; an SD card's
  controller may still keep old blocks, so treat a card as sensitive). A power cut
  before that leaves the request in place, and the next boot does it all again.
  The marker of an earlier rejection goes.
- Bad: nothing in /etc changes and the daemon starts with the config it had. The
  file is renamed ``edge-recorder.toml.rejected`` (to be fixed, not retyped),
  ``edge-recorder.toml.error.txt`` beside it names the section, key, value and
  what is allowed, and ``/var/lib/edge-recorder/provision-error`` holds the same
  as JSON for the daemon (``read_error``). It is in the state directory, not in
  /run/edge-recorder, which is emptied at every boot: the box keeps saying that the installer's config was not applied, across restarts and
  reboots, until a good file is provisioned (or the marker is deleted by hand).

Ownership: files are given to root:edge-recorder when this runs as root and the
group exists in the target root's ``/etc/group`` (``service_owner``); otherwise
they keep the caller's owner (a build or a test as an ordinary user).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from . import config as cfg
from . import findings
from .findings import Finding

log = logging.getLogger("edge-recorder.provision")

#: Where the boot partition may be mounted, in the order they are searched.
BOOT_DIRS = (Path("/boot/firmware"), Path("/boot"))
REQUEST = "edge-recorder.toml"
FILES_DIR = "edge-recorder"  # beside REQUEST: certificates, keys, secret files
REJECTED = REQUEST + ".rejected"
ERROR_TEXT = REQUEST + ".error.txt"
CONFIG_DIR = cfg.DEFAULT_PATH.parent  # /etc/edge-recorder
_CONFIG_DIR = PurePosixPath(CONFIG_DIR)  # as the config's paths are compared with it
MARKER = Path("/var/lib/edge-recorder/provision-error")
GROUP = "edge-recorder"
FILE_MODE = 0o640
DIR_MODE = 0o750
MAX_BYTES = 1 << 20  # per file: configs and certificates are a few KiB

#: Keys naming a file the daemon opens; it must be there once provisioned.
FILE_KEYS = (
    ("mqtt", "ca_file"),
    ("mqtt", "client_cert"),
    ("mqtt", "client_key"),
    ("http", "tls_cert"),
    ("http", "tls_key"),
)
ENCRYPTION_KEY_FILE = "encryption.pub"
#: The minisign public key update bundles must be signed with (images/README.md, "Signing, on the central side"):
#: installed from the card when it is there, whether the config names it or not, root's and readable by all.
UPDATE_KEY_FILE = "update.pub"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Outcome(Enum):
    NOTHING = "nothing"  # no request on the boot partition
    APPLIED = "applied"
    REJECTED = "rejected"  # the request is wrong; nothing changed
    FAILED = "failed"  # the request is fine but could not be installed; it stays for the next boot


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    request: Path | None = None  # the edge-recorder.toml found
    installed: tuple[Path, ...] = ()  # files written (in the target root)
    problem: Finding | None = None  # the first problem
    left_on_boot: tuple[Path, ...] = ()  # applied, but these could not be removed from the boot partition
    commands: str = ""  # applied: who may send the box MQTT commands (``command_mode``)
    problems: tuple[Finding, ...] = ()  # every problem and warning the check found


@dataclass(frozen=True)
class Request:
    """A checked request: the config as written and the files beside it."""

    config: bytes
    files: dict[str, bytes] = field(default_factory=dict)
    warnings: tuple[Finding, ...] = ()


class Rejected(ValueError):
    """The request is refused; ``problems`` is everything the check found, warnings included."""

    def __init__(self, *problems: Finding) -> None:
        self.problems = problems
        self.problem = next(p for p in problems if not p.warning)
        super().__init__("\n".join(p.message for p in problems if not p.warning))


# -- the whole step ------------------------------------------------------------------------


def find_request(boot_dirs: Iterable[Path] = BOOT_DIRS) -> Path | None:
    """The first ``edge-recorder.toml`` in ``boot_dirs``, or None."""
    for boot in boot_dirs:
        if (boot / REQUEST).is_file():
            return boot / REQUEST
    return None


def provision(boot_dirs: Iterable[Path] = BOOT_DIRS, root: Path = Path("/")) -> Result:
    """Apply the request on the boot partition to the system under ``root``."""
    boot_dirs = list(boot_dirs)
    request = find_request(boot_dirs)
    owner = service_owner(root)
    if request is None:
        near = find_misnamed(boot_dirs)
        if near is None:
            return Result(Outcome.NOTHING)
        # Left where it is, under its own name: the note beside it says how to rename it.
        problem = misnamed_problem(near)
        _reject(near, (problem,), root, owner, rename=False)
        return Result(Outcome.REJECTED, near, problem=problem, problems=(problem,))
    try:
        checked = check(request.parent, root)
    except Rejected as exc:
        _reject(request, exc.problems, root, owner)
        return Result(Outcome.REJECTED, request, problem=exc.problem, problems=exc.problems)
    try:
        installed = _install(checked, root, owner)
    except OSError as exc:
        problem = Finding(
            REQUEST,
            f"valid, but could not be installed in {CONFIG_DIR} ({exc}); it stays on the boot partition "
            "and is tried again at the next boot",
        )
        _write_marker(root, "provision_failed", problem, request, owner)
        return Result(Outcome.FAILED, request, problem=problem)
    left = _remove_request(request, checked)
    problem = None
    if left:
        problem = Finding(
            REQUEST,
            "applied, but these could not be removed from the boot partition, where anyone with the card "
            "can read them: " + ", ".join(str(p) for p in left),
        )
        _write_marker(root, "provision_left_secrets", problem, request, owner)
    else:
        _target(root, MARKER).unlink(missing_ok=True)
    problems = (problem,) if problem else checked.warnings
    return Result(Outcome.APPLIED, request, installed, problem, left, command_mode(checked), problems)


def find_misnamed(boot_dirs: Iterable[Path] = BOOT_DIRS) -> Path | None:
    """A file in ``boot_dirs`` that is meant to be the request under another name
    (``edge-recorder.toml.txt``: Windows hides the extension), or None."""
    for boot in boot_dirs:
        near = findings.misnamed(boot, REQUEST)
        if near:
            return near[0]
    return None


def misnamed_problem(path: Path) -> Finding:
    return Finding(path.name, f"not read: the box reads only {REQUEST}", hint=findings.rename_hint(path, REQUEST))


def command_mode(request: Request) -> str:
    """Who may send the box MQTT commands under the requested config (``config.command_mode``), so the
    installer learns which mode the box is in from the answer on the card."""
    mqtt = tomllib.loads(request.config.decode("utf-8")).get("mqtt", {})
    return cfg.command_mode(mqtt if isinstance(mqtt, dict) else {})


def read_error(root: Path = Path("/")) -> dict[str, Any] | None:
    """What the last provisioning left for the daemon to report, or None when all is well.

    Keys: ``code`` (``provision_rejected``, ``provision_failed`` or
    ``provision_left_secrets``), ``message`` (one line), ``file``, ``section``, ``key``,
    ``value``, ``allowed``, ``boot_file`` and ``time``.
    """
    return read_marker(_target(root, MARKER))


def read_marker(path: Path) -> dict[str, Any] | None:
    """``read_error`` for a marker at ``path`` (the daemon looks in its own state directory)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return {"code": "provision_rejected", "message": f"{MARKER} cannot be read: {exc}"}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return {"code": "provision_rejected", "message": text.strip() or f"{MARKER} is empty"}
    return data


# -- checking ------------------------------------------------------------------------------


def check(boot: Path, root: Path = Path("/"), *, fresh_box: bool = False) -> Request:
    """The request in ``boot``, checked as a whole; raises Rejected naming every problem, each at its line.

    ``fresh_box``: check as for the first boot of a box whose /etc/edge-recorder is empty, so
    every file the config names there must come in ``edge-recorder/``; ``root``'s own
    /etc/edge-recorder is not read (``provision --check`` on the installer's computer).
    Paths elsewhere are looked up under ``root`` either way. Files in ``edge-recorder/`` that the
    config does not name are left out of the request, with a warning.
    """
    found: list[Finding] = []
    files = _read_files(boot / FILES_DIR, found)
    data = _read(boot / REQUEST, REQUEST)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise Rejected(*found, Finding(REQUEST, "not UTF-8 text", line=line, hint="save it as UTF-8")) from None
    # A byte order mark (Windows editors) is dropped; the lines that are not TOML are reported, the rest checked.
    raw, syntax, unreadable = findings.decode_all(text, REQUEST, cfg.is_secret_name)
    found += syntax
    locate = _Locator(boot / FILES_DIR, files, root, fresh_box)
    mapped, originals = _secrets_from(raw, locate)
    config, report = cfg.validate(mapped, REQUEST, unreadable)
    for finding in report:
        known = isinstance(finding.value, str) and finding.value in originals
        value = originals[finding.value] if known else finding.value
        reason = finding.reason
        if known and locate.missing(value[len("file:") :]):
            reason = _missing_file(value[len("file:") :], "file:")
        found.append(replace(finding, reason=reason, value=value))
    _check_named_files(raw, locate, found)
    _check_encryption(raw, locate, files, found)
    used = _named(raw) | ({UPDATE_KEY_FILE} & set(files))
    for name in sorted(set(files) - used):
        found.append(
            Finding(
                f"{FILES_DIR}/{name}",
                f"not named by {REQUEST}, so it is not installed; name it in the config "
                f"({CONFIG_DIR}/{name}) or leave it off the card",
                warning=True,
            )
        )
    found = findings.locate(found, text, cfg.is_secret_name)
    if config is None or syntax or any(not p.warning for p in found):
        raise Rejected(*found)
    if not raw:
        found.append(
            Finding(
                REQUEST,
                "sets nothing: every key goes back to its default (is it the right file, and saved?)",
                warning=True,
            )
        )
    # Written without the byte order mark; TOML allows CRLF line ends, so they stay.
    return Request(
        text.removeprefix(findings.BOM).encode("utf-8"),
        {name: data for name, data in files.items() if name in used},
        tuple(found),
    )


def _named(raw: Any) -> set[str]:
    """The names of the files under /etc/edge-recorder that the config's values point at, plain or as ``file:``."""
    if isinstance(raw, dict):
        return set().union(*(_named(value) for value in raw.values()))
    if isinstance(raw, list):
        return set().union(*(_named(value) for value in raw))
    if isinstance(raw, str):
        path = PurePosixPath(posixpath.normpath(raw.removeprefix("file:")))
        if raw.removeprefix("file:").startswith("/") and path.parent == _CONFIG_DIR:
            return {path.name}
    return set()


class _Locator:
    """Where a path the config names is now: in ``edge-recorder/`` on the boot partition when it
    is a file that goes to /etc/edge-recorder, else in the target root; with ``fresh_box``, a
    path under /etc/edge-recorder is only ever looked for on the boot partition."""

    def __init__(self, files_dir: Path, files: Mapping[str, bytes], root: Path, fresh_box: bool = False) -> None:
        self.files_dir, self.files, self.root, self.fresh_box = files_dir, files, root, fresh_box

    def __call__(self, path: str) -> Path:
        pure = PurePosixPath(posixpath.normpath(path))
        if pure.parent == _CONFIG_DIR and pure.name in self.files:
            return self.files_dir / pure.name
        if self.fresh_box and pure.is_relative_to(_CONFIG_DIR):
            # Where it would have to be; not there, since the card's folder holds no folders.
            return self.files_dir / pure.relative_to(_CONFIG_DIR)
        return _target(self.root, Path(path))

    def refused(self, path: str) -> bool:
        """True for a path whose file is on the card but was refused (reported once, on the file itself)."""
        pure = PurePosixPath(posixpath.normpath(path))
        return pure.parent == _CONFIG_DIR and pure.name not in self.files and (self.files_dir / pure.name).exists()

    def missing(self, path: str) -> bool:
        """True for a path under /etc/edge-recorder that neither the card nor the box has."""
        return PurePosixPath(posixpath.normpath(path)).is_relative_to(_CONFIG_DIR) and not self(path).exists()


def _missing_file(path: str, prefix: str = "") -> str:
    """The fix for a file the config names that the box will not have: bring it on the card, and
    name it where the card's files go (``prefix``: ``file:`` for a secret).

    >>> _missing_file("/etc/edge-recorder/mqtt.password", "file:")
    'no such file on the box: put it in edge-recorder/mqtt.password beside edge-recorder.toml'
    >>> _missing_file("/home/pi/ca.pem").split(": ")[1]
    'put it in edge-recorder/ca.pem beside edge-recorder.toml and name it /etc/edge-recorder/ca.pem here'
    """
    name = PurePosixPath(path).name
    fix = f"no such file on the box: put it in {FILES_DIR}/{name} beside {REQUEST}"
    if PurePosixPath(posixpath.normpath(path)).parent != _CONFIG_DIR:
        fix += f" and name it {prefix}{CONFIG_DIR}/{name} here"
    return fix


def _secrets_from(raw: dict[str, Any], locate: _Locator) -> tuple[dict[str, Any], dict[str, str]]:
    """``raw`` with ``file:/absolute/path`` values pointing where the files are now (in every table, the
    ``[destinations.NAME]`` ones too), and the original of each changed value (for error messages)."""
    originals: dict[str, str] = {}

    def mapped(table: Any) -> Any:
        if isinstance(table, dict):
            return {key: mapped(value) for key, value in table.items()}
        if isinstance(table, str) and table.startswith("file:/"):
            new = "file:" + str(locate(table[5:]))
            originals[new] = table
            return new
        return table

    return mapped(raw), originals


def _check_named_files(raw: Mapping[str, Any], locate: _Locator, found: list[Finding]) -> None:
    for section, key in FILE_KEYS:
        table = raw.get(section)
        value = table.get(key) if isinstance(table, dict) else None
        if not value or not isinstance(value, str) or locate.refused(value):
            continue
        if not value.startswith("/"):
            found.append(Finding(REQUEST, f"expected an absolute path, e.g. {CONFIG_DIR}/ca.pem", section, key, value))
        elif not locate(value).is_file():
            found.append(Finding(REQUEST, _missing_file(value), section, key, value))


def _check_encryption(
    raw: Mapping[str, Any], locate: _Locator, files: Mapping[str, bytes], found: list[Finding]
) -> None:
    from .media.encrypted import check_recipient

    table = raw.get("encryption")
    value = table.get("public_key", "") if isinstance(table, dict) else ""
    if not isinstance(value, str) or locate.refused(value):
        return  # the schema has said what it expects, or the card's file was refused
    if value:
        where = value
        if not value.startswith("age1"):
            if not value.startswith("/"):
                found.append(
                    Finding(
                        REQUEST,
                        f'expected "age1..." or an absolute path, e.g. {CONFIG_DIR}/{ENCRYPTION_KEY_FILE}',
                        "encryption",
                        "public_key",
                        value,
                    )
                )
                return
            if locate.missing(value):
                found.append(Finding(REQUEST, _missing_file(value), "encryption", "public_key", value))
                return
            where = str(locate(value))
        try:
            check_recipient(where)
        except ValueError as exc:
            # The value is shown before the reason already: not again as its prefix.
            found.append(Finding(REQUEST, _reason(exc, where, value), "encryption", "public_key", value))
    wanted = f"{CONFIG_DIR}/{ENCRYPTION_KEY_FILE}"
    if ENCRYPTION_KEY_FILE in files and value != wanted:
        found.append(
            Finding(
                REQUEST,
                f'{FILES_DIR}/{ENCRYPTION_KEY_FILE} is on the boot partition but not used: set public_key = "{wanted}" '
                "to encrypt recordings to it, or leave the file out",
                "encryption",
                "public_key",
                value,
            )
        )


def _read_files(files_dir: Path, found: list[Finding]) -> dict[str, bytes]:
    """The files in ``edge-recorder/``, each checked for what its name says it is; a bad one is reported
    in ``found`` and left out."""
    if not files_dir.exists():
        return {}
    shown = f"{FILES_DIR}/"
    if not files_dir.is_dir():
        found.append(Finding(FILES_DIR, f"expected a folder holding certificates and keys, found a file: use {shown}"))
        return {}
    files = {}
    for path in sorted(files_dir.iterdir()):
        name, shown = path.name, f"{FILES_DIR}/{path.name}"
        if name.startswith("."):
            continue  # ._name and .DS_Store that macOS leaves on FAT volumes
        if path.is_dir():
            found.append(Finding(shown, f"folders are not supported: put the files directly in {FILES_DIR}/"))
        elif not _NAME.match(name):
            found.append(Finding(shown, "expected a name of letters, digits, '.', '-' and '_'"))
        elif name == cfg.DEFAULT_PATH.name:
            found.append(Finding(shown, f"the config goes in {REQUEST} beside the folder, not in it"))
        else:
            try:
                data = _read(path, shown)
                _check_content(name, data, shown, path)
            except Rejected as exc:
                found.extend(exc.problems)
                continue
            files[name] = data
    return files


def _check_content(name: str, data: bytes, shown: str, path: Path) -> None:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".pem", ".crt", ".key") and b"-----BEGIN " not in data:
        raise Rejected(Finding(shown, "expected PEM text (-----BEGIN ...-----); convert a DER file with openssl"))
    if suffix == ".key" and b"PRIVATE KEY-----" not in data:
        raise Rejected(Finding(shown, "expected a PEM private key (-----BEGIN ... PRIVATE KEY-----)"))
    if name == UPDATE_KEY_FILE:
        import minisign

        try:
            minisign.PublicKey.from_bytes(data)
        except minisign.ParseError as exc:
            raise Rejected(
                Finding(shown, f"not a minisign public key ({exc}): the update.pub that minisign -G wrote")
            ) from None
    if name == ENCRYPTION_KEY_FILE:
        from .media.encrypted import check_recipient

        try:
            check_recipient(path)
        except ValueError as exc:
            raise Rejected(Finding(shown, _reason(exc, str(path), shown))) from None


def _reason(exc: ValueError, path: str, shown: str) -> str:
    """``check_recipient``'s error without its ``path:`` prefix (the Finding names the file), and
    ``path`` written as the installer knows it.

    >>> _reason(ValueError("/boot/k.pub: holds 2 recipients, not /boot/k.pub"), "/boot/k.pub", "k.pub")
    'holds 2 recipients, not k.pub'
    """
    return str(exc).removeprefix(f"{path}: ").replace(path, shown)


def _read(path: Path, shown: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise Rejected(Finding(shown, f"cannot be read: {exc.strerror}")) from None
    if len(data) > MAX_BYTES:
        raise Rejected(Finding(shown, f"larger than {MAX_BYTES // 1024} KiB; is it the right file?"))
    return data


# -- applying ------------------------------------------------------------------------------


def service_owner(root: Path) -> tuple[int, int] | None:
    """(root, the ``edge-recorder`` group) when this process may chown and ``root`` has the group."""
    if os.geteuid() != 0:
        return None
    try:
        lines = _target(root, Path("/etc/group")).read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == GROUP and fields[2].isdigit():
            return 0, int(fields[2])
    return None


def _install(request: Request, root: Path, owner: tuple[int, int] | None) -> tuple[Path, ...]:
    directory = _target(root, CONFIG_DIR)
    if not directory.is_dir():  # made by the install (tmpfiles.d) on a real box
        directory.mkdir(mode=DIR_MODE, parents=True)
        if owner:
            os.chown(directory, *owner)
    written = []
    # The config last: what it names is in place before it.
    for name, data in [*request.files.items(), (cfg.DEFAULT_PATH.name, request.config)]:
        if name == UPDATE_KEY_FILE:  # it decides what the box runs: root's, and no secret
            _write_file(directory / name, data, (0, 0) if owner else None, mode=0o644)
        else:
            _write_file(directory / name, data, owner)
        written.append(directory / name)
    _fsync_dir(directory)
    return tuple(written)


def _write_file(path: Path, data: bytes, owner: tuple[int, int] | None, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` in one step: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.provisioning")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if owner:
                os.fchown(f.fileno(), *owner)
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove_request(request: Path, checked: Request) -> tuple[Path, ...]:
    """Wipe the request and its files off the boot partition; what could not be removed."""
    boot = request.parent
    files_dir = boot / FILES_DIR
    doomed = []
    if files_dir.is_dir():
        doomed += sorted(p for p in files_dir.iterdir() if p.is_file())
    doomed += [request, boot / REJECTED, boot / ERROR_TEXT, boot / f"._{REQUEST}"]
    # Copies under other names (edge-recorder (1).toml, .toml.txt): older versions of the request, with its
    # secrets; left, they would read as a misnamed request at the next boot.
    doomed += findings.misnamed(boot, REQUEST)
    left = tuple(p for p in doomed if not _wipe(p))
    if files_dir.is_dir():
        try:
            files_dir.rmdir()
        except OSError as exc:
            log.warning("%s not removed: %s", files_dir, exc.strerror)
    _fsync_dir(boot)
    return left


def _wipe(path: Path) -> bool:
    """Overwrite ``path`` with zeros, then remove it: an unlink alone leaves its clusters readable."""
    if not path.exists():
        return True
    try:
        with path.open("r+b") as f:
            f.write(bytes(path.stat().st_size))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        log.warning("%s not overwritten before removal: %s", path, exc.strerror)
    try:
        path.unlink()
    except OSError as exc:
        log.error("%s not removed from the boot partition: %s", path, exc.strerror)
        return False
    return True


def _reject(
    request: Path, problems: tuple[Finding, ...], root: Path, owner: tuple[int, int] | None, *, rename: bool = True
) -> None:
    boot = request.parent
    try:
        if rename:
            os.replace(request, boot / REJECTED)
        _write_boot_text(boot / ERROR_TEXT, error_text(problems, rejected=REJECTED if rename else request.name))
    except OSError as exc:  # a read-only card: the next boot rejects it again, the marker still tells
        log.error("could not mark %s as rejected on the boot partition: %s", request, exc)
    _write_marker(root, "provision_rejected", problems, boot / REJECTED if rename else request, owner)


def error_text(problems: tuple[Finding, ...] | Finding, rejected: str = REJECTED) -> str:
    """The note left beside the rejected file for the installer: every problem, each at its line."""
    if isinstance(problems, Finding):
        problems = (problems,)
    errors = [p for p in problems if not p.warning]
    warnings = [p for p in problems if p.warning]
    count = f"{len(errors)} problem" + ("s" if len(errors) != 1 else "")
    lines = [f"edge-recorder did NOT apply {REQUEST}: the box keeps the configuration it had.", "", f"{count}:"]
    for number, problem in enumerate(errors, 1):
        lines += ["", f"{number}. {problem.message}"]
        lines += problem.lines()[1:]
        if problem.section:
            lines.append(f"   section: [{problem.section}]")
        if problem.key:
            lines += [f"   key:     {problem.key}", f"   value:   {problem.value!r}"]
        lines.append(f"   allowed: {problem.reason}")
    if warnings:
        lines += ["", "Also worth a look:"]
        for problem in warnings:
            lines += ["", *problem.lines()]
    fix = (
        f"Fix {rejected}, rename it back to {REQUEST} and start the box again."
        if rejected == REJECTED
        else f"Rename {rejected} to {REQUEST} and start the box again."
    )
    lines += [
        "",
        fix,
        "On a Linux computer with edge-recorder, 'edge-recorder provision --check --boot <the card's folder>' "
        "makes the box's checks first.",
        f"Rejected at {_now()}.",
    ]
    return "\n".join(lines) + "\n"


def _write_boot_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _write_marker(
    root: Path, code: str, problems: tuple[Finding, ...] | Finding, boot_file: Path, owner: tuple[int, int] | None
) -> None:
    if isinstance(problems, Finding):
        problems = (problems,)
    errors = [p for p in problems if not p.warning] or list(problems)
    first = errors[0]
    message = first.message
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more: see {boot_file.with_name(ERROR_TEXT).name} on the boot partition)"
    marker = _target(root, MARKER)
    data = {
        "code": code,
        "message": message,
        "file": first.file,
        "section": first.section,
        "key": first.key,
        "value": first.value,
        "allowed": first.reason,
        "line": first.line,
        "problems": [p.as_dict() for p in problems],
        "boot_file": str(boot_file),
        "time": _now(),
    }
    try:
        marker.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _write_file(marker, (json.dumps(data, default=str, indent=1) + "\n").encode(), owner)
        _fsync_dir(marker.parent)
    except OSError as exc:
        log.error("could not write %s: %s", marker, exc)


# -- helpers -------------------------------------------------------------------------------


def _target(root: Path, path: Path) -> Path:
    """``path`` (absolute, on the box) inside the root file system at ``root``."""
    return root / Path(path).relative_to("/")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # vfat may not support fsync on a directory
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
