"""The hub on a real network: HTTPS with a private CA for agents and the CLI, and the
public URL devices are sent to when the API listens on every interface.

Real hub (uvicorn over TLS, embedded broker), real agent downloading over HTTPS, the
real `edgefleet` CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from dataclasses import replace

import httpx
import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from edge_agent.cli import _load_plugins, cli
from edge_agent.contract.directive import Directive
from edge_agent.contract.topics import Channel, topic
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.service import HubService, HubSettings
from tests.support.tls import make_tls

pytestmark = pytest.mark.timeout(120)
_load_plugins(cli)


def edgefleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False,
    )  # fmt: skip


def retained_directive(host: str, port: int, device: str) -> Directive:
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

    def on_message(_c, _u, msg) -> None:
        got.append(msg.payload)
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic(device, Channel.DESIRED), qos=1)
    client.connect(host, port)
    client.loop_start()
    try:
        assert done.wait(30), "no retained directive"
    finally:
        client.loop_stop()
        client.disconnect()
    return Directive.from_json(json.loads(got[0])["directive"])


@pytest.fixture
def tls_hub(tmp_path, demo_dir, reference_x):
    tls = make_tls(tmp_path / "tls")
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        api_port=0,
        embedded_broker_port=free_port(),
        tls_cert_file=tls.cert,
        tls_key_file=tls.key,
    )
    with HubService(settings) as service:
        ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        service.registry.push_model(
            (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
        )
        token, _ = service.tokens.create("ci", ["deploy", "read"])
        yield service, tls, token


def test_agent_downloads_from_an_https_hub_with_a_private_ca(tls_hub, agent_config, reference_x):
    service, tls, token = tls_hub
    assert service.api.url.startswith("https://")
    config = replace(
        agent_config,
        trust_file=service.settings.data_dir / "keys" / "trust.json",
        broker=BrokerConfig(host=service.broker.host, port=service.broker.port),
        download_ca_file=tls.ca,
    )
    with Agent(config) as agent:
        r = httpx.post(
            f"{service.api.url}/v1/devices/{config.device_id}/deploy",
            json={"name": "pump", "version": 1},
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(tls.ca)),
        )
        assert r.status_code == 201, r.text

        def activated(_: object) -> bool:
            return any(
                r.event.kind.value == "activated"
                for r in service.store.events(device=config.device_id, limit=100)
            )

        assert service.ingest.wait_until(activated, 60), "the agent never activated v1"
        assert agent.predict(reference_x[0]).model.version == 1


def test_cli_trusts_a_private_hub_ca_only_when_told(tls_hub):
    service, tls, token = tls_hub
    env = {"EDGEFLEET_TOKEN": token, "EDGEFLEET_HUB_CA": ""}
    untrusted = edgefleet("rollout", "list", "--hub", service.api.url, env=env)
    assert untrusted.returncode == 1
    assert "Traceback" not in untrusted.stderr
    lines = [line for line in untrusted.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"hub {service.api.url} unreachable" in lines[0], untrusted.stderr
    assert "TLS certificate is not trusted" in lines[0] and "--hub-ca" in lines[0]
    by_flag = edgefleet(
        "rollout", "list", "--hub", service.api.url, "--hub-ca", str(tls.ca), env=env
    )
    assert by_flag.returncode == 0, by_flag.stderr
    by_env = edgefleet(
        "rollout", "list", "--hub", service.api.url,
        env={**env, "EDGEFLEET_HUB_CA": str(tls.ca)},
    )  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr


def test_wildcard_api_host_needs_a_public_url(tmp_path):
    result = CliRunner().invoke(
        cli, ["hub", "serve", "--data", str(tmp_path / "hub"), "--api-host", "0.0.0.0"]
    )
    assert result.exit_code == 2
    assert "--api-host 0.0.0.0 needs --public-url" in result.output
    assert not (tmp_path / "hub").exists()  # refused before anything was written
    bad = CliRunner().invoke(
        cli,
        ["hub", "serve", "--data", str(tmp_path / "hub"), "--public-url", "http://0.0.0.0:1"],
    )
    assert bad.exit_code == 2 and "not a wildcard" in bad.output


def test_directives_carry_the_public_url(tmp_path, demo_dir, reference_x):
    settings = HubSettings(
        data_dir=tmp_path / "hub",
        api_host="0.0.0.0",
        api_port=0,
        embedded_broker_port=free_port(),
        public_url="https://hub.example.test:8443",
    )
    with HubService(settings) as service:
        ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        service.registry.push_model(
            (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
        )
        token, _ = service.tokens.create("ci", ["deploy"])
        port = service.api.url.rsplit(":", 1)[1]
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/devices/dev-pub/deploy",
            json={"name": "pump", "version": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        signed = retained_directive(service.broker.host, service.broker.port, "dev-pub")
    (url,) = signed.model.urls
    assert url.startswith("https://hub.example.test:8443/v1/bundles/"), url
    assert "0.0.0.0" not in json.dumps(signed.model.urls)
