"""The appliance daemon (``edge-recorder run``): the one place where the core,
``hal`` (capture, playback, GPIO panel), the spool, the catalog, events and the
controls are wired together (``box.Box``)."""
