"""The real hub end to end: push a model, deploy it to a real agent, watch it report back.

No test double: the hub signs the directive, serves the bundle through a signed URL,
ingests the agent's events and windows, and acknowledges them.
"""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.service import HubService, HubSettings

pytestmark = pytest.mark.timeout(90)


def kinds(service: HubService, device: str) -> list[tuple[str, int | None]]:
    return [
        (r.event.kind.value, r.event.model.version if r.event.model else None)
        for r in service.store.events(device=device, limit=1000)
    ]


def wait_event(service: HubService, device: str, kind: str, version: int | None) -> None:
    ok = service.ingest.wait_until(lambda _: (kind, version) in kinds(service, device), 30)
    assert ok, f"no {kind} v{version} from {device}: {kinds(service, device)}"


def test_push_deploy_report_downgrade(tmp_path, demo_dir, reference_x, agent_config):
    settings = HubSettings(data_dir=tmp_path / "hub", api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        token, _ = service.tokens.create("ci", ["deploy"])
        auth = {"Authorization": f"Bearer {token}"}
        api = service.api.url
        ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        for _ in (1, 2):
            service.registry.push_model(
                (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
            )
        config = replace(
            agent_config,
            trust_file=settings.data_dir / "keys" / "trust.json",
            broker=BrokerConfig(host=service.broker.host, port=service.broker.port),
        )
        dev = config.device_id
        with Agent(config) as agent:
            fast = {
                "window_s": 0.5,
                "min_predictions": 1,
                "max_error_rate": 0.5,
                "max_latency_p95_ms": None,
                "max_crashes": 2,
            }
            r = httpx.post(
                f"{api}/v1/devices/{dev}/deploy",
                headers=auth,
                json={"name": "pump", "version": 2, "probation": fast},
            )
            assert r.status_code == 201, r.text
            wait_event(service, dev, "activated", 2)
            for row in reference_x[:40]:
                assert agent.predict(row).model.version == 2
            agent.close_window()
            assert agent.wait_for_drain(20), "the hub stored and acked the window"
            wait_event(service, dev, "probation_passed", 2)
            # a plain downgrade is refused by the device...
            httpx.post(
                f"{api}/v1/devices/{dev}/deploy", headers=auth, json={"name": "pump", "version": 1}
            ).raise_for_status()
            wait_event(service, dev, "refused", None)
            assert agent.active_version.version == 2
            # ...a signed one is followed
            httpx.post(
                f"{api}/v1/devices/{dev}/deploy",
                headers=auth,
                json={"name": "pump", "version": 1, "downgrade": True},
            ).raise_for_status()
            wait_event(service, dev, "activated", 1)
            assert agent.predict(reference_x[0]).model.version == 1
        actions = [e.action for e in service.audit.entries(limit=100)]
        assert actions.count("directive.publish") == 3
        assert (
            httpx.post(
                f"{api}/v1/devices/{dev}/deploy", headers=auth, json={"name": "pump", "version": 9}
            ).status_code
            == 404
        )
