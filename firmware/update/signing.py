"""Bundle signatures in minisign's format, checked on the box and made on the central side.

minisign (https://jedisct1.github.io/minisign/) is Ed25519 over a BLAKE2b-512 hash of the file,
in small text files: a central server signs and checks with the standard tool (Debian's
``minisign``: ``minisign -Sm BUNDLE -s KEY``, ``minisign -Vm BUNDLE -p update.pub``), and the
box checks with py-minisign, a pure-Python implementation on ``cryptography``'s Ed25519 (which
the box has anyway), so it needs no minisign binary.

Only the prehashed form (``ED``, minisign's default) is accepted: the file is hashed in chunks
as it is read, so a bundle never has to fit in memory. The legacy form (``minisign -l``) signs
the whole file as one message and is refused. A good signature also covers its trusted comment
(minisign's "global signature"), which says when and what was signed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO

import minisign


class SignatureError(ValueError):
    """A key or signature that cannot be used, or a signature that does not match."""


def signature_path(bundle: Path) -> Path:
    """Where minisign puts a file's signature: beside it, ``.minisig`` added."""
    return bundle.with_name(bundle.name + ".minisig")


#: A minisign signature is four lines, its trusted comment short: anything much larger is not one.
MAX_SIGNATURE_BYTES = 16 * 1024


def load_public_key(path: Path) -> minisign.PublicKey:
    try:
        return minisign.PublicKey.from_bytes(Path(path).read_bytes())
    except minisign.ParseError as exc:
        raise SignatureError(f"{path} is not a minisign public key ({exc})") from None


def verify(data: BinaryIO, signature: Path, key: minisign.PublicKey, *, copy_to: BinaryIO | None = None) -> str:
    """Check ``data`` (read to its end) against ``signature``; return the trusted comment.

    With ``copy_to``, every byte read is written there too: what was checked is then a file of
    the caller's own, which nobody can change between the check and its use.
    """
    with Path(signature).open("rb") as f:
        text = f.read(MAX_SIGNATURE_BYTES + 1)
    if len(text) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"{signature} is not a minisign signature (over {MAX_SIGNATURE_BYTES} bytes)")
    try:
        parsed = minisign.Signature.from_bytes(text)
    except minisign.ParseError as exc:
        raise SignatureError(f"{signature} is not a minisign signature ({exc})") from None
    if not parsed.is_prehashed():
        raise SignatureError(f"{signature} is a legacy signature (minisign -l): sign without -l")
    reader = data if copy_to is None else _Copying(data, copy_to)
    try:
        key.verify(reader, parsed)
    except minisign.VerifyError as exc:
        raise SignatureError(str(exc)) from None
    return parsed.trusted_comment


def sign(file: Path, secret_key: Path, *, password: str | None = None) -> Path:
    """Sign ``file`` as ``minisign -Sm FILE`` does (prehashed); return the signature's path.

    The trusted comment is minisign's own: the time and the file's name.
    """
    try:
        key = minisign.SecretKey.from_file(secret_key)
    except minisign.ParseError as exc:
        raise SignatureError(f"{secret_key} is not a minisign secret key ({exc})") from None
    with key:
        if key.is_encrypted():
            if password is None:
                raise SignatureError(f"{secret_key} is encrypted: give its password")
            try:
                key.decrypt(password)
            except minisign.Error as exc:
                raise SignatureError(f"{secret_key}: {exc}") from None
        comment = f"timestamp:{int(time.time())}\tfile:{file.name}\thashed"
        with file.open("rb") as data:
            signature = key.sign(data, prehash=True, trusted_comment=comment)
    out = signature_path(file)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(bytes(signature) + b"\n")
    os.replace(partial, out)
    return out


class _Copying:
    """A reader that writes what it reads to a second file."""

    def __init__(self, data: BinaryIO, copy_to: BinaryIO) -> None:
        self._data = data
        self._copy_to = copy_to

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._data.read(size)
        self._copy_to.write(chunk)
        return chunk
