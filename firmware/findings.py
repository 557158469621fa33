"""What is wrong with a config file, as the installer sees it: every problem at once, each at its line.

Theory of operation
-------------------
An installer fixes a card on site, and each round trip is a card swap or a reboot, so a check
reports everything it finds in one pass: ``firmware.config`` checks every key and every rule
between keys and gives back a list of ``Finding``; this module turns the file's text into the
table the schema checks (``decode``), and the findings back into places in that text
(``locate``), so each one reads ``file:line:column: [section] key = value: what is allowed``
with the line as written and a caret under it.

The usual ways a file goes wrong come from the computer it was written on, not from TOML:

- Windows hides a file's extension, so ``edge-recorder.toml`` is saved as
  ``edge-recorder.toml.txt`` (``misnamed`` finds it and spells out the rename);
- TextEdit saves rich text (RTF) unless told otherwise;
- word processors and phones turn straight quotes into curly ones;
- ``True``, ``yes`` and unquoted text are other formats' spellings.

A syntax error names the line and column tomllib gives, and a hint when the line shows one of
these causes (``hint_for``). A byte order mark at the start, which Windows editors write, is
dropped, here and in secret files (``firmware.config.read_small_file``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BOM = "\ufeff"
#: Key names that say their value is a secret (the rule ``redact`` applies to query parameters): a line
#: holding one is never shown as written.
SECRET_NAME = re.compile(r"token|secret|pass|pw|jwt|bearer|key|sig|auth|credential", re.IGNORECASE)
_HIDDEN = ("(hidden)", "(a private key, hidden)")


@dataclass(frozen=True)
class Finding:
    """One problem (or, with ``warning``, a doubt) in a config: the file, what is wrong, and where.

    >>> Finding("edge-recorder.toml", 'expected "mqtt://host[:port]"', "mqtt", "url", "mqt://x", line=4).message
    'edge-recorder.toml:4: [mqtt] url = \\'mqt://x\\': expected "mqtt://host[:port]"'
    """

    file: str
    reason: str
    section: str | None = None
    key: str | None = None
    value: Any = None
    warning: bool = False
    line: int | None = None
    column: int | None = None
    excerpt: str = ""  # the line as written
    hint: str = ""

    @property
    def message(self) -> str:
        """The finding on one line: where, the key and value, and what is allowed (control characters shown
        as escapes: a terminal must not take a key's name for a command)."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        what = ""
        if self.section:
            what = f"[{self.section}]" + (f" {self.key} = {self.value!r}" if self.key else "") + ": "
        return printable(f"{where}: {what}{self.reason}")

    def lines(self) -> list[str]:
        """The message, then the line as written with a caret under the column, then the hint."""
        out = [self.message]
        if self.excerpt:
            excerpt = printable(self.excerpt)
            out.append("    " + excerpt)
            if self.column is not None and excerpt == self.excerpt:
                out.append("    " + " " * _width(self.excerpt[: self.column - 1]) + "^")
        if self.hint:
            out.append("    hint: " + printable(self.hint))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "severity": "warning" if self.warning else "error",
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "section": self.section,
            "key": self.key,
            "value": self.value,
            "allowed": self.reason,
            "hint": self.hint or None,
        }


def _width(text: str) -> int:
    return len(text.expandtabs(8))


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters (C0 but tab, DEL, C1) written as escapes, for a terminal or a note:
    an escape sequence in a key, a value or a server's answer must not move the cursor or fake a line.

    >>> printable("ok\\x1b[2K\\x9b1A")
    'ok\\\\x1b[2K\\\\x9b1A'
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class ConfigError(ValueError):
    """A config that cannot be used; ``str()`` is every problem, one a line.

    Built for one problem (``ConfigError(section, key, value, allowed, source)``) or for all a check
    found (``ConfigError.of(findings)``); ``section``, ``key``, ``value`` and ``allowed`` are the first's.
    """

    def __init__(self, section: str, key: str | None, value: Any, allowed: str, source: str = "") -> None:
        self._set((Finding(source, allowed, section, key, value),))

    @classmethod
    def of(cls, findings: Sequence[Finding]) -> ConfigError:
        errors = [f for f in findings if not f.warning]
        if not errors:
            raise ValueError("a ConfigError needs at least one finding that is not a warning")
        exc = cls.__new__(cls)
        exc._set(tuple(findings))
        return exc

    def _set(self, findings: tuple[Finding, ...]) -> None:
        self.findings = findings
        first = self.errors[0]
        self.section, self.key, self.value, self.allowed = first.section or "file", first.key, first.value, first.reason
        self.source = first.file
        super().__init__("\n".join(f.message if f.file else _unsourced(f) for f in self.errors))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if not f.warning]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.warning]


def _unsourced(finding: Finding) -> str:
    return finding.message.removeprefix(": ")


# -- from text to table ------------------------------------------------------------------------

_AT = re.compile(r"\(at line (\d+), column (\d+)\)|\(at end of document\)")
_CURLY = "\u201c\u201d\u2018\u2019\u00ab\u00bb\u201e"
_VALUE = re.compile(r"^\s*([A-Za-z0-9_.\"'-]+)\s*=\s*(.*?)\s*$")
_BOOLISH = {"True", "False", "TRUE", "FALSE", "yes", "no", "Yes", "No", "YES", "NO", "on", "off", "On", "Off"}


#: At most this many syntax errors are reported from one file: past them, the rest is noise.
MAX_SYNTAX_ERRORS = 10


def decode(text: str, source: str) -> dict[str, Any]:
    """The TOML table in ``text``; ConfigError naming every syntax error at its line and column, with a hint.

    >>> decode('[device]\\nid = “box-1”\\n', "card.toml")
    Traceback (most recent call last):
    ...
    firmware.findings.ConfigError: card.toml:2:6: not valid TOML: invalid value
    """
    table, found, _ = decode_all(text, source)
    if found:
        raise ConfigError.of(found)
    return table


def decode_all(
    text: str, source: str, secret: Callable[[str], bool] | None = None
) -> tuple[dict[str, Any], list[Finding], set[tuple[str, str]]]:
    """What can be read of ``text``: the table without the lines that are not TOML, a finding for each of
    those lines, and the (section, key) each of them seems to set, so the schema's checks can still look at
    the rest of the file without taking those keys for their defaults.

    A line that breaks TOML is blanked and the text read again, up to ``MAX_SYNTAX_ERRORS`` times.
    ``secret`` says whether a key's name is one of a secret (a misspelt one too): its line is not shown.
    """
    text = text.removeprefix(BOM)
    if text.lstrip().startswith("{\\rtf"):
        return (
            {},
            [
                Finding(
                    source,
                    "saved as rich text (RTF), not plain text",
                    line=1,
                    hint="in TextEdit choose Format > Make Plain Text, then save; or write it in a plain-text "
                    "editor (Notepad, nano)",
                )
            ],
            set(),
        )
    lines = text.split("\n")
    found: list[Finding] = []
    unreadable: set[tuple[str, str]] = set()
    index = _Index(text)
    while True:
        try:
            return tomllib.loads("\n".join(lines)), found, unreadable
        except tomllib.TOMLDecodeError as exc:
            finding = syntax_finding(str(exc), text, source, secret)
            line = finding.line or 0
            blanked = not 0 < line <= len(lines) or not lines[line - 1].strip()
            if found and (finding.line == found[-1].line or blanked):
                return {}, found, unreadable  # it does not get better by blanking more
            found.append(finding)
            if blanked or len(found) >= MAX_SYNTAX_ERRORS or _AT.search(str(exc)).group(1) is None:
                return {}, found, unreadable
            unreadable |= index.keys_on(line)
            lines[line - 1] = ""


def syntax_finding(error: str, text: str, source: str, secret: Callable[[str], bool] | None = None) -> Finding:
    """tomllib's ``error`` as a finding at its line and column, with the line and a hint; a line that may hold
    a secret is shown with its value masked, or not at all when it is not ``key = value``."""
    match = _AT.search(error)
    reason = "not valid TOML: " + _AT.sub("", error).strip().rstrip(".").lower()
    lines = text.split("\n")  # as tomllib counts them: a U+2028 or a form feed is no line end
    if match is None or match.group(1) is None:
        line = len(lines) or 1
        column = None
    else:
        line, column = int(match.group(1)), int(match.group(2))
    excerpt = lines[line - 1].rstrip("\r") if 0 < line <= len(lines) else ""
    match = _VALUE.match(excerpt)
    if match is None and not _HEADER_START.match(excerpt):
        # Inside a multi-line string (a token list, a pasted key) or a stray line: said by its number only.
        return Finding(source, reason, line=line, hint=hint_for(excerpt, error) if not revealing(excerpt) else "")
    if match is not None and (revealing(excerpt) or (secret is not None and secret(_unquote_path(match.group(1))))):
        # The value may be a secret: the line is shown with it masked, and without a caret into it.
        value = match.group(2)
        masked = value[0] + "..." + value[-1] if value[:1] in "\"'" + _CURLY and len(value) > 1 else "..."
        excerpt, column = f"{match.group(1)} = {masked}", None
    return Finding(source, reason, line=line, column=column, excerpt=excerpt, hint=hint_for(excerpt, error))


_HEADER_START = re.compile(r"^\s*\[")
_USERINFO = re.compile(r"://[^/\s]*@")


def revealing(line: str) -> bool:
    """Whether ``line`` may hold a secret: a secret's name in it (a key, a query parameter, an inline table),
    or a URL with a user and password.

    >>> revealing('url = "mqtt://box:pw@broker"'), revealing('password = "x"'), revealing("record_button = 40")
    (True, True, False)
    """
    return bool(SECRET_NAME.search(line) or _USERINFO.search(line))


def hint_for(line: str, error: str = "") -> str:
    """What usually causes a syntax error on ``line``, or "".

    >>> hint_for('enabled = True')
    'true and false are written in lower case: enabled = true'
    >>> hint_for('capture = plughw:CARD=Device')
    'text goes in double quotes: capture = "plughw:CARD=Device"'
    """
    if any(ch in line for ch in _CURLY):
        return (
            "the quotes are curly (“ ” ‘ ’): an editor or a phone replaced the straight quotes; type \" or ' in a "  # noqa: RUF001
            "plain-text editor, or turn off smart quotes"
        )
    match = _VALUE.match(line)
    if match is None:
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.endswith("]"):
            return "a section header is one line: [name]"
        if stripped and "=" not in stripped and not stripped.startswith("#"):
            return 'each line is key = value, a [section] header, or a comment starting with "#"'
        return ""
    key, value = match.groups()
    if " " in key.strip("\"'"):
        return "a key has no spaces; the keys are listed in docs/configuration.md"
    if value in _BOOLISH:
        word = "true" if value.lower() in ("true", "yes", "on") else "false"
        return f"true and false are written in lower case: {key} = {word}"
    if value.startswith('"') and "\\" in value:
        return f"a backslash starts an escape inside double quotes; use single quotes: {key} = '{value.strip(chr(34))}'"
    if value and value[0] not in "\"'[{-+0123456789#" and value not in ("true", "false", "inf", "nan"):
        return f'text goes in double quotes: {key} = "{value}"'
    if value and value[0] in "\"'" and value.count(value[0]) == 1:
        return f"the closing quote is missing: {key} = {value}{value[0]}"
    return ""


# -- from findings back to the text ------------------------------------------------------------

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def locate(findings: Iterable[Finding], text: str, secret: Callable[[str], bool] | None = None) -> list[Finding]:
    """``findings`` with the line (and column) each key or section has in ``text``, and the line itself
    unless it may hold a secret (``revealing``, a hidden value, or a key ``secret`` names), in the order
    of their lines (those without one last)."""
    index = _Index(text.removeprefix(BOM))
    out = []
    for finding in findings:
        if finding.line is not None or not finding.section:
            out.append(finding)
            continue
        found = index.find(finding.section, finding.key, of_value=not finding.reason.startswith("unknown key"))
        if found is None:
            out.append(finding)
            continue
        line, column = found
        excerpt = index.lines[line - 1].rstrip("\r")
        hidden = isinstance(finding.value, str) and finding.value in _HIDDEN
        if hidden or revealing(excerpt) or (finding.key and secret is not None and secret(finding.key)):
            excerpt = ""  # the line holds a secret, or may
        out.append(replace(finding, line=line, column=column, excerpt=excerpt))
    return sorted(out, key=lambda f: (f.line is None, f.line or 0))


@dataclass
class _Index:
    text: str
    lines: list[str] = field(init=False)
    headers: dict[str, int] = field(init=False)
    keys: dict[tuple[str, str], tuple[int, int, int]] = field(init=False)  # line, key's column, value's

    def __post_init__(self) -> None:
        self.lines = self.text.split("\n")  # as tomllib counts lines
        self.headers, self.keys = {}, {}
        table = ""
        for number, line in enumerate(self.lines, 1):
            header = _HEADER.match(line)
            if header:
                table = _unquote_path(header.group(1))
                self.headers.setdefault(table, number)
                continue
            match = _VALUE.match(line)
            if match:
                parts = _unquote_path(match.group(1)).split(".")
                section = ".".join(filter(None, [table, *parts[:-1]]))
                self.keys.setdefault((section, parts[-1]), (number, match.start(1) + 1, match.start(2) + 1))

    def keys_on(self, line: int) -> set[tuple[str, str]]:
        """The (section, key) a line seems to set, even when it is not valid TOML."""
        table = ""
        for number, text in enumerate(self.lines[:line], 1):
            header = _HEADER.match(text)
            if header:
                table = _unquote_path(header.group(1))
            elif number == line:
                match = _VALUE.match(text)
                if match:
                    parts = _unquote_path(match.group(1)).split(".")
                    return {(".".join(filter(None, [table, *parts[:-1]])), parts[-1])}
        return set()

    def find(self, section: str, key: str | None, of_value: bool = True) -> tuple[int, int] | None:
        """The line and column of ``key`` (of its value, or of its name) or else of ``section``'s header."""
        if key is not None and (section, key) in self.keys:
            line, key_column, value_column = self.keys[(section, key)]
            return line, value_column if of_value else key_column
        if section in self.headers:
            number = self.headers[section]
            return number, self.lines[number - 1].index("[") + 1
        return None


def _unquote_path(path: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in path.split("."))


# -- the file's name ---------------------------------------------------------------------------


def misnamed(directory: Path, wanted: str) -> list[Path]:
    """Files in ``directory`` that look like ``wanted`` under another name: ``wanted.txt``,
    ``wanted.toml`` twice, another case, a copy's ``(1)``, ``_`` for ``-``.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); _ = (d / "edge-recorder.toml.txt").write_text("")
    >>> [p.name for p in misnamed(d, "edge-recorder.toml")]
    ['edge-recorder.toml.txt']
    """
    stem = _squash(wanted.rsplit(".", 1)[0])
    try:
        names = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError:
        return []
    found = []
    for path in names:
        name = path.name
        if name == wanted or name.startswith((".", wanted + ".rejected", wanted + ".error")):
            continue
        base, before = name, None
        while base != before:
            before = base
            for suffix in _EXTENSIONS:
                if base.lower().endswith(suffix):
                    base = base[: -len(suffix)]
        if (base != name and _squash(base) == stem) or _squash(name) == _squash(wanted):
            found.append(path)
    return found


_EXTENSIONS = (".txt", ".toml", ".rtf", ".text", ".tml", ".conf", ".cfg", ".ini")


def _squash(name: str) -> str:
    """``name`` in lower case without copies' numbers, spaces, ``-``, ``_`` and the extension's dot."""
    name = re.sub(r"\s*\(\d+\)|\s*copy", "", name.lower())
    return re.sub(r"[\s_.-]", "", name)


def rename_hint(path: Path, wanted: str) -> str:
    """How to fix a misnamed file, in the words of the computer it came from.

    >>> rename_hint(Path("edge-recorder.toml.txt"), "edge-recorder.toml")
    'rename edge-recorder.toml.txt to edge-recorder.toml (Windows hides the ending .txt: in Explorer, View > Show > File name extensions)'
    """
    extra = path.name[len(wanted) :] if path.name.lower().startswith(wanted.lower()) else ""
    text = f"rename {path.name} to {wanted}"
    if extra:
        text += f" (Windows hides the ending {extra}: in Explorer, View > Show > File name extensions)"
    return text
