"""edge-recorder firmware: the recording core, spool, CLI (and, as they land,
catalog, delivery, control and the daemon)."""

__version__ = "0.1.0"
