"""The MQTT topic tree: one versioned prefix, five topics per device and one for the fleet.

::

    edgefleet/v1/devices/<device_id>/desired   hub -> device, retained, signed directive
    edgefleet/v1/devices/<device_id>/ack       hub -> device, retained, highest stored seq
    edgefleet/v1/devices/<device_id>/state     device -> hub, retained (last will: offline)
    edgefleet/v1/devices/<device_id>/events    device -> hub, deployment events
    edgefleet/v1/devices/<device_id>/metrics   device -> hub, closed metric windows
    edgefleet/v1/trust                         hub -> devices, retained, the chain of
                                               signed trust rotations (public keys only)

A device's broker account may read only its own ``desired`` and ``ack`` and the fleet's
``trust``, and write only its own ``state``, ``events`` and ``metrics`` (see
``deploy/mosquitto``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from edge_agent.contract.fields import safe_name
from edge_agent.errors import ValidationError

PREFIX: Final = "edgefleet/v1/devices"
#: The fleet-wide topic of the retained rotation chain
#: (:class:`edge_agent.contract.trust.RotationChain`).
TRUST_TOPIC: Final = "edgefleet/v1/trust"


class Channel(StrEnum):
    """The last topic level: what a message on it is."""

    DESIRED = "desired"
    ACK = "ack"
    STATE = "state"
    EVENTS = "events"
    METRICS = "metrics"
    TRUST = "trust"
    """Fleet-wide, not per device: its one topic is :data:`TRUST_TOPIC`."""


#: What a device publishes; the hub subscribes to these across the fleet.
DEVICE_CHANNELS: Final = (Channel.STATE, Channel.EVENTS, Channel.METRICS)
#: What the hub publishes for a device (retained).
HUB_CHANNELS: Final = (Channel.DESIRED, Channel.ACK)


def topic(device_id: str, channel: Channel) -> str:
    """The topic of ``channel`` for ``device_id`` (:data:`TRUST_TOPIC` for ``TRUST``).

    Raises:
        ValidationError: the device id is not a safe name (no ``/``, ``+``, ``#``).
    """
    if channel is Channel.TRUST:
        return TRUST_TOPIC
    return f"{PREFIX}/{safe_name(device_id, 'device_id')}/{channel.value}"


def fleet_filter(channel: Channel) -> str:
    """The subscription filter for ``channel`` across all devices."""
    return f"{PREFIX}/+/{channel.value}"


def parse_topic(name: str) -> tuple[str, Channel]:
    """Split a device topic into device id and channel (``trust`` is not a device topic).

    Raises:
        ValidationError: the topic is not in the EdgeFleet tree.
    """
    head, sep, rest = name.rpartition("/")
    prefix, sep2, device_id = head.rpartition("/")
    if not sep or not sep2 or prefix != PREFIX:
        raise ValidationError(f"topic {name!r} is not under {PREFIX}/<device>/<channel>")
    try:
        channel = Channel(rest)
        if channel is Channel.TRUST:
            raise ValueError(rest)
    except ValueError as exc:
        raise ValidationError(f"topic {name!r}: unknown channel {rest!r}") from exc
    return safe_name(device_id, f"topic {name!r}"), channel
