"""A typed client for the EdgeFleet hub's HTTP API (httpx only; never imports the hub).

``HubClient`` (blocking) and ``AsyncHubClient`` (asyncio) send the same requests and
return the same frozen dataclasses (:mod:`edgefleet_client.models`), parsed strictly
from the API's JSON. Every failure is a :class:`HubError` carrying the HTTP status and
the hub's one-line message.
"""

from __future__ import annotations

from edgefleet_client.client import AsyncHubClient, HubClient
from edgefleet_client.errors import HubError
from edgefleet_client.models import (
    Alert,
    AlertPage,
    AuditEntry,
    AuditPage,
    DeployResult,
    Device,
    DeviceDetail,
    DeviceHistory,
    DevicePage,
    DriftBins,
    DriftDecision,
    DriftFeature,
    DriftHistory,
    DriftHour,
    DriftResult,
    DriftRule,
    Event,
    EventPage,
    FeaturePsi,
    FleetSummary,
    GateResult,
    Health,
    HistoryPoint,
    HubHealth,
    ModelRef,
    ModelSummary,
    ModelVersionInfo,
    Rollout,
    RolloutStage,
    StageDevices,
    Transition,
    VersionCount,
    WhoAmI,
)
from edgefleet_client.specs import RolloutDraft

__all__ = [
    "Alert",
    "AlertPage",
    "AsyncHubClient",
    "AuditEntry",
    "AuditPage",
    "DeployResult",
    "Device",
    "DeviceDetail",
    "DeviceHistory",
    "DevicePage",
    "DriftBins",
    "DriftDecision",
    "DriftFeature",
    "DriftHistory",
    "DriftHour",
    "DriftResult",
    "DriftRule",
    "Event",
    "EventPage",
    "FeaturePsi",
    "FleetSummary",
    "GateResult",
    "Health",
    "HistoryPoint",
    "HubClient",
    "HubError",
    "HubHealth",
    "ModelRef",
    "ModelSummary",
    "ModelVersionInfo",
    "Rollout",
    "RolloutDraft",
    "RolloutStage",
    "StageDevices",
    "Transition",
    "VersionCount",
    "WhoAmI",
]
