"""Field updates: signed release bundles, one slot per version, one atomic switch.

Theory of operation
-------------------
A release is one file per architecture, a *bundle* (``bundle.py`` builds it; ``manifest.py`` is
its format): the project's wheel, every dependency as a wheel for that platform, the units and
``images/install.sh``, and a manifest with each file's sha256. It is signed with minisign
(``signing.py``), so a central server signs and checks it with the standard tool and a box checks
it against the public key it was installed with, ``/etc/edge-recorder/update.pub``.

On the box each version lives in a slot of its own, ``/opt/edge-recorder/slots/VERSION``, and
the link ``/opt/edge-recorder/current`` names the running one (``slots.py``; install.sh makes the
layout). ``apply.update`` takes a bundle through these steps, and stops at the first that fails
with a ``Refused`` that names the reason in one line; until the switch, nothing the box runs has
changed:

1. verified: the signature, while the bundle is copied into a private staging folder (what is
   checked is what is installed); then the manifest, against this machine: architecture, Python,
   a newer version (unless forced), a catalog schema the new version reads; then every file
   against its sha256.
2. installed: the bundle's install.sh makes a new slot offline (``--prepare``: pip --no-index
   from the bundle's wheels), and the new version checks the box with its own code: its
   ``config check`` on the box's config, its catalog migration on a copy of the catalog
   (``preflight.py``).
3. switched: a copy of the catalog as it is is kept beside it (the rule in images/README.md,
   "Updating boxes"), then the new slot's install.sh switches (``--switch``): the update guard
   records the switch as pending, ``previous`` names what ran, ``current`` is renamed over to the
   new slot. Then the service restarts.
4. confirmed or rolled back (``state.py``): the new version confirms the update itself once it
   has recorded healthily for ``[update] confirm_seconds`` (``confirm.py``); before that, a crash
   loop, a failed start or a reboot makes the update guard (``systemd/update-guard``, a shell
   script outside the slots, run by the units) switch back to the previous slot and put the
   catalog's copy back when the new version migrated the catalog. A new update waits until the
   last one is confirmed or rolled back.

The steps are named by ``Stage`` and each refusal by ``Reason``: the words a ``device.update``
event and a rollback will use, so the local command, a bundle on the boot partition, an MQTT
command and a Mender module can all go through this one path.
"""

from __future__ import annotations

import enum


class Stage(enum.Enum):
    """How far an update got (the ``device.update`` event names)."""

    CHECKING = "checking"  # a note on the way, before anything is decided
    VERIFIED = "verified"
    INSTALLED = "installed"
    SWITCHED = "switched"
    RESTARTED = "restarted"


class Reason(enum.Enum):
    """Why an update was refused."""

    MISSING = "missing"  # the bundle or its signature is not there
    NO_KEY = "no-key"  # the box has no usable update key
    SIGNATURE = "signature"  # not signed by the box's key
    TRUNCATED = "truncated"  # the bundle ends early (an interrupted copy or download)
    DAMAGED = "damaged"  # signed, but not a bundle as this version reads them
    TAMPERED = "tampered"  # a file differs from its sha256 in the manifest
    WRONG_MACHINE = "wrong-machine"  # built for another architecture or Python
    NOT_NEWER = "not-newer"  # not newer than the running version, and not forced
    CATALOG = "catalog"  # the new version cannot use the box's catalog
    CONFIG = "config"  # the new version rejects the box's config
    NO_SPACE = "no-space"
    INSTALL = "install"  # the new slot could not be made
    BUSY = "busy"  # another update is running
    NOT_INSTALLED = "not-installed"  # the root has no slots to update
    PERMISSION = "permission"
    UNCONFIRMED = "unconfirmed"  # the last update is not confirmed or rolled back yet
    DOWNLOAD = "download"  # the bundle's server could not be reached or refused it (download.py)
    TOO_LARGE = "too-large"  # the bundle is larger than the box takes
    CANCELLED = "cancelled"  # stopped on the box's request (a download's .part is kept to resume)


class Refused(Exception):
    """An update that did not happen, and why, in one line; the running version is untouched.

    >>> str(Refused(Reason.NOT_NEWER, "0.1.0 is not newer than the running 0.2.0"))
    '0.1.0 is not newer than the running 0.2.0'
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
