"""What became of the last switch between slots: pending, confirmed or rolled back.

Theory of operation
-------------------
A switch to a new slot (images/install.sh, step 5) is *pending* until the new version proves
itself, and a pending switch ends in one of two ways:

- **confirmed**: the new version's daemon, READY and healthy for ``[update] confirm_seconds``
  (``confirm.py``), leaves a note where it may write, ``/var/lib/edge-recorder/update-confirmed``,
  naming the switch's ``ID``;
- **rolled back**, at the first of these before the note is there: a start in another boot than
  the switch's (``reboot``), a start after ``MAX_STARTS`` starts of the new version
  (``crash-loop``: systemd's ``Restart=`` brings them), the unit failing (``failed-start``: an
  exit ``RestartPreventExitStatus=`` keeps down, a start that timed out, the start limit).

The one who decides is the update guard, ``systemd/update-guard``, a POSIX shell script that
install.sh puts outside the slots (``/usr/lib/edge-recorder/update-guard``): it must work when
the new version cannot even import. It runs as root before each start of the unit
(``ExecStartPre=``) and when the unit has failed (``edge-recorder-rollback.service``,
``OnFailure=``), records the switch for install.sh, and is the only writer of the state file
``/opt/edge-recorder/update.state``; it says how it rolls back. This module reads the file and
the note, for ``edge-recorder update --status``, doctor, the updater (which takes no new update
while one is pending) and the daemon (which confirms).

The file is ``KEY=value`` lines (no quoting; a value never holds a newline), written whole and
renamed over the old one; ``#`` lines are comments:

    STATE          pending, confirmed, rolling-back (a rollback under way) or rolled-back
    ID             the switch's id, which the confirmation note must name
    SLOT, VERSION  the slot switched to and its version
    PREVIOUS_SLOT  the slot that ran before, which a rollback goes back to
    SWITCHED_AT    when (UTC, RFC 3339)
    BOOT_ID        the boot the switch happened in (empty: outside a running box, e.g. an image
                   build; the first start adopts its boot)
    STARTS         starts of the new version so far while pending
    CONFIRMATION   where the daemon leaves its note (a path on the box)
    CATALOG        the catalog's path on the box
    CATALOG_COPY   the copy a rollback puts back in its place; empty when the new version writes
                   the schema the catalog had (the images/README.md catalog rule)
    REASON         why it was rolled back: reboot, crash-loop, failed-start, by-hand (current
                   no longer named the pending slot), interrupted (the update stopped before its
                   switch) or requested (update-guard rollback: Mender's rollback)
    DETAIL         the same in a sentence
    CHANGED_AT     when STATE last changed

The note is the same kind of file, written by the daemon: ``ID``, ``SLOT``, ``VERSION``,
``CONFIRMED_AT``, ``HEALTHY_SECONDS``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from pathlib import Path

from .slots import Layout, Slot

STATE_FILE = "update.state"  # in /opt/edge-recorder
#: Starts of a new version before it is confirmed; the next start switches back (the guard's MAX_STARTS).
MAX_STARTS = 3


class Phase(enum.Enum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"


#: Each rollback reason in the words an installer reads.
WHY = {
    "reboot": "the box restarted before it was confirmed",
    "crash-loop": f"it did not stay up: {MAX_STARTS} starts without being confirmed",
    "failed-start": "its start failed",
    "by-hand": "it was switched away from by hand before it was confirmed",
    "requested": "it was switched back on request (Mender's rollback, or update-guard rollback)",
    "interrupted": "the update was cut short before its switch: the version that ran before runs on",
}


def parse_lines(text: str) -> dict[str, str]:
    """``KEY=value`` lines as a dict; comments, blank lines and lines without ``=`` are skipped.

    >>> parse_lines("# a note\\nSTATE=pending\\nDETAIL=a=b\\n\\nnonsense\\n")
    {'STATE': 'pending', 'DETAIL': 'a=b'}
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and not key.startswith("#"):
            values.setdefault(key, value)
    return values


@dataclass(frozen=True)
class UpdateState:
    """The state file as the guard last wrote it."""

    phase: Phase
    id: str
    slot: str
    version: str
    previous_slot: str
    switched_at: str = ""
    boot_id: str = ""
    starts: int = 0
    confirmation: str = ""
    catalog: str = ""
    catalog_copy: str = ""
    reason: str = ""
    detail: str = ""
    changed_at: str = ""

    @classmethod
    def parse(cls, text: str) -> UpdateState | None:
        """None for a file that is not a state the guard wrote (no known STATE, no SLOT).

        >>> UpdateState.parse("STATE=pending\\nID=ab\\nSLOT=0.2.0\\nVERSION=0.2.0\\nPREVIOUS_SLOT=0.1.0\\nSTARTS=2\\n").starts
        2
        >>> UpdateState.parse("STATE=maybe\\nSLOT=0.2.0\\n") is None
        True
        """
        values = parse_lines(text)
        try:
            phase = Phase(values.get("STATE"))
        except ValueError:
            return None
        if not values.get("SLOT"):
            return None
        given = {f.name: values.get(f.name.upper(), "") for f in fields(cls) if f.name not in ("phase", "starts")}
        starts = values.get("STARTS", "")
        return cls(phase=phase, starts=int(starts) if starts.isdigit() else 0, **given)


@dataclass(frozen=True)
class Confirmed:
    """The daemon's note: the switch ``id`` to ``slot`` ran healthy for ``seconds``."""

    id: str
    slot: str
    version: str
    at: str
    seconds: int

    def to_text(self) -> str:
        return (
            "# The running version confirms its update (firmware/update/confirm.py); the update guard records it.\n"
            f"ID={self.id}\nSLOT={self.slot}\nVERSION={self.version}\nCONFIRMED_AT={self.at}\n"
            f"HEALTHY_SECONDS={self.seconds}\n"
        )

    @classmethod
    def parse(cls, text: str) -> Confirmed | None:
        values = parse_lines(text)
        if not values.get("ID"):
            return None
        seconds = values.get("HEALTHY_SECONDS", "")
        return cls(
            values["ID"],
            values.get("SLOT", ""),
            values.get("VERSION", ""),
            values.get("CONFIRMED_AT", ""),
            int(seconds) if seconds.isdigit() else 0,
        )


def state_path(box: Layout) -> Path:
    return box.top / STATE_FILE


def read_state(box: Layout) -> UpdateState | None:
    """The state of the last switch, None when there was none (a box installed once, from before rollbacks)."""
    try:
        return UpdateState.parse(state_path(box).read_text(encoding="utf-8", errors="replace"))
    except (FileNotFoundError, NotADirectoryError):
        return None


def note_path(box: Layout, state: UpdateState) -> Path | None:
    return box.on_box(state.confirmation) if state.confirmation else None


def read_confirmation(box: Layout, state: UpdateState) -> Confirmed | None:
    """The daemon's note for this switch, None when there is none (or it names another switch).

    Raises PermissionError when this user may not read it (it is in the daemon's state directory).
    """
    path = note_path(box, state)
    if path is None:
        return None
    try:
        note = Confirmed.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    return note if note is not None and note.id == state.id else None


@dataclass(frozen=True)
class Status:
    """The running and the previous version, and what became of the last switch between them."""

    running: Slot | None
    previous: Slot | None
    state: UpdateState | None  # None: no switch recorded
    confirmed: Confirmed | None = None  # the daemon's note, before the guard has recorded it
    unreadable: bool = False  # this user may not read the note

    @property
    def left_by_hand(self) -> bool:
        """Pending, but ``current`` no longer names its slot: the guard records ``by-hand`` at the next start."""
        state = self.state
        return (
            state is not None
            and state.phase is Phase.PENDING
            and self.confirmed is None
            and (self.running is None or self.running.name != state.slot)
        )

    @property
    def phase(self) -> Phase | None:
        """What the switch is now, before the guard's next run records it: PENDING is CONFIRMED as soon as the
        daemon's note is there, and ROLLED_BACK once it was left by hand."""
        state = self.state
        if state is None:
            return None
        if state.phase is Phase.PENDING and self.confirmed is not None:
            return Phase.CONFIRMED
        if self.left_by_hand:
            return Phase.ROLLED_BACK
        return state.phase

    @property
    def interrupted(self) -> bool:
        """Left pending with ``current`` and ``previous`` both still naming the slot that ran: the update stopped
        between recording its switch and making it (the guard records ``interrupted``)."""
        state = self.state
        return (
            self.left_by_hand
            and state is not None
            and self.running is not None
            and self.previous is not None
            and self.running.name == self.previous.name == state.previous_slot
        )

    @property
    def reason(self) -> str:
        """Why it was rolled back (a key of ``WHY``), "" when it was not."""
        if self.left_by_hand:
            return "interrupted" if self.interrupted else "by-hand"
        return self.state.reason if self.state is not None and self.phase is not Phase.CONFIRMED else ""

    @property
    def pending(self) -> bool:
        return self.phase is Phase.PENDING

    def summary(self) -> str:
        """One line: the running version and whether it is confirmed.

        >>> Status(Slot("0.1.0", Path("/"), "0.1.0"), None, None).summary()
        'edge-recorder 0.1.0 (slot 0.1.0), installed without an update'
        """
        running = _named(self.running)
        state, phase = self.state, self.phase
        if state is None or phase is None:
            return f"{running}, installed without an update"
        if phase is Phase.CONFIRMED:
            at = self.confirmed.at if self.confirmed is not None else state.changed_at
            return f"{running}, confirmed at {at or 'an unknown time'}"
        if phase is Phase.PENDING:
            starts = f"{state.starts} start{'s' if state.starts != 1 else ''}"
            note = " (this user may not read its confirmation)" if self.unreadable else ""
            return (
                f"{running}, not confirmed yet{note}: switched at {state.switched_at}, {starts} so far; a crash "
                f"loop, a failed start or a reboot before it is confirmed switches back to slot {state.previous_slot}"
            )
        why = WHY.get(self.reason, self.reason or "no reason recorded")
        if phase is Phase.ROLLING_BACK:
            return f"{running}: switching back from edge-recorder {state.version} ({why}), finished at the next start"
        if self.interrupted:
            return f"{running}: the update to edge-recorder {state.version} was cut short before its switch"
        if self.left_by_hand:
            return f"{running}, switched to by hand from edge-recorder {state.version}: {why}"
        return f"{running}, switched back at {state.changed_at} from edge-recorder {state.version}: {why}"

    def lines(self) -> list[str]:
        """What ``edge-recorder update --status`` prints."""
        out = [f"running:  {self.summary()}"]
        previous = _named(self.previous) if self.previous is not None else "none kept"
        if self.phase is Phase.ROLLED_BACK and self.state is not None and self.state.detail:
            out.append(f"why:      {self.state.detail}")
        out.append(f"previous: {previous}")
        return out


def status(box: Layout) -> Status:
    """The box's versions and its last switch, as this user may see them."""
    state = read_state(box)
    confirmed, unreadable = None, False
    if state is not None and state.phase is Phase.PENDING:
        try:
            confirmed = read_confirmation(box, state)
        except PermissionError:
            unreadable = True
    return Status(box.slot("current"), box.slot("previous"), state, confirmed, unreadable)


def _named(slot: Slot | None) -> str:
    if slot is None:
        return "nothing installed in slots"
    return f"edge-recorder {slot.version or '(unknown version)'} (slot {slot.name})"
