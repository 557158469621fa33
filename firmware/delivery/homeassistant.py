"""Home Assistant MQTT discovery (``[mqtt] ha_discovery = true``).

Publishes retained ``<ha_prefix>/<component>/<device_id>/<object>/config``
documents for a record button (it sends the ``button`` command, with a token
good for the button alone when the box asks for a command token), the recording
state, the input level, free storage and the upload backlog, all read from the
box's retained ``state`` topic and available while ``status`` is ``online``.
See https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .. import __version__
from ..config import button_token

if TYPE_CHECKING:
    from .mqtt import Link

SENSORS = (
    ("state", "Recording state", "{{ value_json.state }}", None, None),
    ("input_level", "Input level", "{{ value_json.input_level }}", "dBFS", "measurement"),
    ("free_storage", "Free storage", "{{ value_json.free_storage_mb }}", "MB", "measurement"),
    ("upload_backlog", "Upload backlog", "{{ value_json.upload_backlog }}", None, "measurement"),
)


def documents(link: Link, ha_prefix: str, command_token: str = "") -> dict[str, dict]:
    """Discovery topic -> config document. With a ``command_token``, the button presses with the token
    derived from it for the button alone (``config.button_token``), never with the command token itself."""
    device_id = link.device_id
    device = {
        "identifiers": [f"edge-recorder-{device_id}"],
        "name": f"edge-recorder {device_id}",
        "manufacturer": "edge-recorder",
        "sw_version": __version__,
    }
    common = {
        "availability_topic": link.topic("status"),
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device,
        # Which software published the entity: Home Assistant shows it, and logs it with discovery problems.
        "origin": {"name": "edge-recorder", "sw_version": __version__},
    }
    docs = {
        f"{ha_prefix}/button/{device_id}/record/config": common
        | {
            "name": "Record",
            "unique_id": f"{device_id}-record",
            "command_topic": link.topic("cmd"),
            "payload_press": json.dumps(
                {"op": "button"} | ({"token": button_token(command_token)} if command_token else {})
            ),
            "icon": "mdi:record-rec",
        }
    }
    for key, name, template, unit, state_class in SENSORS:
        doc = common | {
            "name": name,
            "unique_id": f"{device_id}-{key}",
            "state_topic": link.topic("state"),
            "value_template": template,
        }
        if unit:
            doc["unit_of_measurement"] = unit
        if state_class:
            doc["state_class"] = state_class
        docs[f"{ha_prefix}/sensor/{device_id}/{key}/config"] = doc
    return docs


def publish_discovery(link: Link, ha_prefix: str, command_token: str = "") -> None:
    for topic, doc in documents(link, ha_prefix, command_token).items():
        link.client.publish(topic, json.dumps(doc), qos=1, retain=True)
