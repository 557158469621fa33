"""The ``edge-recorder`` command line."""
