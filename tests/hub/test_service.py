"""The assembled hub (embedded broker, ingest, store, API) with a real agent reporting to it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import httpx
import pytest

from edge_agent.agent import Agent
from edge_agent.config import BrokerConfig
from hub.broker import free_port
from hub.service import HubService, HubSettings
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def hub_service(tmp_path):
    settings = HubSettings(data_dir=tmp_path / "hub", api_port=0,
                           embedded_broker_port=free_port())
    with HubService(settings) as service:
        yield service


def test_agent_reports_to_the_hub_and_the_api_shows_it(hub_service, agent_config, server,
                                                       bundles, reference_x, signing_keys):
    broker = hub_service.broker
    token, _ = hub_service.tokens.create("ops", ["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    config = replace(agent_config, broker=BrokerConfig(host=broker.host, port=broker.port))
    # until rollouts exist, the directive is signed and published by the test double (no acks)
    publisher = HubDouble(broker.host, broker.port, signing_keys[:2], ack=False)
    try:
        with Agent(config) as agent:
            url = server.add("/b/v1.efb", bundles["v1"].read_bytes())
            publisher.publish_directive(publisher.directive(config.device_id,
                                                            model_ref(bundles["v1"], url)))
            publisher.wait_for(publisher.event(config.device_id, "activated"))
            for row in reference_x[:25]:
                agent.predict(row)
            agent.close_window()
            assert agent.wait_for_drain(20), "the hub's ingest stored and acked the window"
            api = hub_service.api.url
            devices = httpx.get(f"{api}/v1/devices", headers=headers).json()["devices"]
            assert [d["id"] for d in devices] == [config.device_id]
            detail = httpx.get(f"{api}/v1/devices/{config.device_id}", headers=headers).json()
            assert detail["active"]["version"] == 1 and detail["metrics_seq"] >= 1
            events = httpx.get(f"{api}/v1/events", headers=headers,
                               params={"device": config.device_id}).json()["events"]
            assert "activated" in [e["kind"] for e in events]
            metrics = httpx.get(f"{api}/metrics", headers=headers).text
            assert "edgefleet_ingest_stored_total" in metrics
            assert httpx.get(f"{api}/v1/devices/nope", headers=headers).status_code == 404
            assert httpx.get(f"{api}/v1/devices").status_code == 401
    finally:
        publisher.close()


def test_audit_log_records_token_actions_and_verifies(hub_service, tmp_path):
    token, _ = hub_service.tokens.create("ops", ["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    api = hub_service.api.url
    created = httpx.post(f"{api}/v1/tokens", headers=headers,
                         json={"name": "ci", "scopes": ["deploy"]}).json()
    httpx.delete(f"{api}/v1/tokens/{created['id']}", headers=headers)
    audit = httpx.get(f"{api}/v1/audit", headers=headers).json()
    assert [e["action"] for e in audit["entries"]] == ["hub.start", "token.create",
                                                       "token.revoke"]
    assert audit["verified"] is True
    assert created["token"] not in json.dumps(audit)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "audit", "verify", "--data",
         str(hub_service.settings.data_dir)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "verified: 3 entries" in proc.stdout


def test_audit_verify_cli_detects_an_edited_entry(hub_service):
    import sqlite3

    db = hub_service.settings.data_dir / "hub.db"
    hub_service.audit.append("ops", "model.push", "pump", {"version": 2})
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit SET target = 'other' WHERE action = 'model.push'")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "audit", "verify", "--data",
         str(hub_service.settings.data_dir)], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "edited" in proc.stderr
