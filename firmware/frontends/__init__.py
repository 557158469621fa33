"""The front ends: how people and servers drive a box. Each gets the control API (``firmware.control``)
and nothing else.

- ``http``: the local Recordings API (``/v1``), modelled on Twilio's Recording resource;
- ``mqtt_commands``: JSON commands on ``<prefix>/<device_id>/cmd``;
- ``panel``: the GPIO panel's buttons and hook switch.
"""
