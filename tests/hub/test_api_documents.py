"""The API's documents on a running hub (real uvicorn, embedded broker, SQLite, registry
with a pushed model, stored windows and events): ``/openapi.json`` documents every
answer body, real answers validate against their declared models, and each body is the
document the hub's own ``to_json`` writes, key for key and in the same order (the bytes
clients have always read)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from edge_agent.contract.messages import (
    Event,
    EventKind,
    Health,
    MetricsMessage,
    ModelVersion,
    State,
)
from edge_agent.errors import ValidationError
from edge_agent.inference.accumulator import WindowAccumulator
from edge_agent.inference.model import LoadedModel
from hub.api import ApiServer, HubContext, create_app
from hub.api.errors import status_of
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.drift import drift_report
from hub.errors import ConflictError, HubError, NotFoundError, UnavailableError
from hub.modelkit.dataset import FEATURES, make_dataset
from hub.rollouts import (
    Gates,
    RolloutConflictError,
    RolloutError,
    RolloutNotFoundError,
    RolloutSpec,
    RolloutStateError,
    RolloutStoreError,
    Stage,
)
from hub.service import HubService, HubSettings
from hub.store import StoreError
from hub.tokens import TokenStore

pytestmark = pytest.mark.timeout(120)

T0 = 1_700_000_000.0 - 1_700_000_000.0 % 3600


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, demo_dir: Path
) -> Iterator[tuple[HubService, httpx.Client]]:
    data = tmp_path_factory.mktemp("documents") / "hub"
    settings = HubSettings(data_dir=data, api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        with np.load(demo_dir / "reference.npz") as npz:
            ref = ReferenceData(np.asarray(npz["x"], dtype=np.float64), FEATURES)
        model_bytes = (demo_dir / "model-int8.tflite").read_bytes()
        service.registry.push_model(model_bytes, name="pump", reference=ref, lineage={"run": 7})
        model = LoadedModel(model_bytes)
        reference = service.registry.reference("pump", 1)
        messages = []
        for d in range(2):
            x = make_dataset(600, seed=d).x.astype(np.float64)
            for q in range(10):
                acc = WindowAccumulator(reference, "pump", 1, clock=lambda s=T0 + 60.0 * q: s)
                rows = x[q * 60 : (q + 1) * 60]
                acc.record(rows, model.predict(rows.astype(np.float32)), 0.001)
                w = acc.close(now=T0 + 60.0 * q + 60.0)
                assert w is not None
                messages.append(MetricsMessage(f"dev-{d}", q + 1, q + 1, (w,)))
        service.store.store_metrics(messages)
        found = service.registry.get("pump", 1)
        assert found is not None
        running = ModelVersion("pump", 1, found.sha256)
        service.store.record_state(
            State(
                "dev-0",
                True,
                T0,
                "1.0",
                active=running,
                health=Health(12.5, 1 << 20, 1 << 30, 60.0),
            )
        )
        service.store.record_state(State("dev-1", True, T0, "1.0"))
        service.store.set_tags("dev-0", ["north"])
        service.store.record_event(Event("dev-0", T0, EventKind.ACTIVATED, "ok", running, 1, None))
        admin, _ = service.tokens.create("admin", ["admin", "deploy", "read"])
        with httpx.Client(
            base_url=service.api.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ) as client:
            assert (
                client.post(
                    "/v1/devices/dev-1/deploy", json={"name": "pump", "version": 1}
                ).status_code
                == 201
            )
            spec = RolloutSpec(
                id="r1", model="pump", target_version=1, previous_version=None,
                stages=(Stage(share=1.0, bake_s=3600, gates=Gates(max_psi=None)),),
            )  # fmt: skip
            assert client.post("/v1/rollouts", json=spec.to_json()).status_code == 201
            yield service, client


def app_routes(service: HubService) -> list[APIRoute]:
    assert service.api is not None
    return [r for r in service.api.server.config.app.routes if isinstance(r, APIRoute)]


def test_openapi_documents_a_body_for_every_answer(hub):
    service, client = hub
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    operations = 0
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            operations += 1
            ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
            assert ok, f"{method} {path}: no 2xx response"
            for code, response in ok.items():
                if code == "204":
                    assert "content" not in response, f"{method} {path}: 204 with a body"
                    continue
                for media, body in response["content"].items():
                    schema = body.get("schema", {})
                    if "$ref" in schema:
                        schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
                    assert schema not in ({}, {"type": "object"}), (
                        f"{method} {path} {media}: {schema}"
                    )
                    if schema.get("type") == "object":  # a model, not a bare free-form object
                        assert schema.get("properties"), f"{method} {path}: no properties"
    assert operations == sum(len(r.methods) for r in app_routes(service))  # nothing hidden


#: Real calls whose answers are checked against their route's declared model.
CALLS = (
    "/healthz",
    "/v1/whoami",
    "/v1/tokens",
    "/v1/devices",
    "/v1/devices?include_revoked=true&limit=1",
    "/v1/devices/dev-0",
    "/v1/events",
    "/v1/models",
    "/v1/models/pump/versions",
    "/v1/models/pump/versions/1",
    "/v1/models/pump/versions/1/drift",
    "/v1/models/pump/versions/1/drift?device=nobody",
    "/v1/rollouts",
    "/v1/rollouts/r1",
    "/v1/rollouts/r1?devices=true",
    "/v1/audit",
    "/v1/fleet/summary",
    "/v1/fleet/events/latest",
    "/v1/alerts",
)


def route_of(service: HubService, url: str) -> APIRoute:
    path = url.split("?")[0]
    for route in app_routes(service):
        if "GET" in route.methods and route.path_regex.match(path):
            return route
    raise AssertionError(f"no route for {url}")


@pytest.mark.parametrize("url", CALLS)
def test_real_answers_validate_and_round_trip_through_their_model(hub, url):
    service, client = hub
    r = client.get(url)
    assert r.status_code == 200, r.text
    body = r.json()
    route = route_of(service, url)
    adapter: TypeAdapter[Any] = TypeAdapter(route.response_model)
    parsed = adapter.validate_python(body)  # raises when the body is not the model
    again = adapter.dump_python(
        parsed, mode="json", by_alias=True, exclude_unset=route.response_model_exclude_unset
    )
    assert json.dumps(again) == json.dumps(body)  # nothing dropped, retyped or reordered


def same(body: Any, document: Any) -> None:
    """The same JSON, key order included."""
    assert json.dumps(body) == json.dumps(document)


def test_bodies_are_the_documents_the_hub_writes(hub):
    service, client = hub
    r = service.rollouts.get("r1").rollout
    same(client.get("/v1/rollouts/r1").json(), r.to_json())
    same(client.get("/v1/rollouts").json(), {"rollouts": [r.to_json()]})
    entries = service.audit.entries(0, 100)
    same(client.get("/v1/audit").json()["entries"], [e.to_json() for e in entries])
    windows = service.store.merged_windows("pump", 1, "active")
    report = drift_report(service.registry.reference("pump", 1), windows)
    same(
        client.get("/v1/models/pump/versions/1/drift").json(),
        {"model": "pump", "version": 1, "since": None, "n": report.n,
         "decision": report.decision.to_json(), "report": report.to_json()},
    )  # fmt: skip
    record = service.store.events(None, 0, 10)[0]
    same(
        client.get("/v1/events").json()["events"][0],
        {"id": record.id, **json.loads(record.event.to_bytes())},
    )
    device = client.get("/v1/devices/dev-0").json()
    assert device["health"] == {"cpu_percent": 12.5, "rss_bytes": 1 << 20,
                                "disk_free_bytes": 1 << 30, "uptime_s": 60.0}  # fmt: skip
    assert isinstance(device["health"]["rss_bytes"], int) and device["active"]["name"] == "pump"
    found = service.registry.get("pump", 1)
    assert found is not None
    version = client.get("/v1/models/pump/versions/1").json()
    same(version["inputs"], [t.to_json() for t in found.inputs])
    assert version["lineage"] == {"run": 7} and version["sha256"] == found.sha256


def test_a_rollout_lists_stage_devices_only_when_asked(hub):
    _, client = hub
    assert "stage_devices" not in client.get("/v1/rollouts/r1").json()
    stages = client.get("/v1/rollouts/r1", params={"devices": "true"}).json()["stage_devices"]
    assert stages[0]["stage"] == 0 and stages[0]["devices"] == 2 and stages[0]["reached"]


BODIES = {
    ("post", "/v1/rollouts"): "application/json",
    ("post", "/v1/devices/{device_id}/deploy"): "application/json",
    ("post", "/v1/tokens"): "application/json",
    ("post", "/v1/bundles"): "application/octet-stream",
    ("post", "/v1/models/{name}/push"): "multipart/form-data",
}


def test_openapi_documents_every_request_body(hub):
    _, client = hub
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for (method, path), media in BODIES.items():
        body = doc["paths"][path][method].get("requestBody")
        assert body is not None, f"{method} {path}: no request body"
        schema = body["content"][media]["schema"]
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[1]]
        assert schema.get("properties") or schema.get("format") == "binary", (path, schema)
    spec = schemas[doc["paths"]["/v1/rollouts"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]  # fmt: skip
    assert set(spec["properties"]) == set(RolloutSpec(id="x", model="m", target_version=1,
                                                      previous_version=None).to_json())  # fmt: skip


def test_an_under_scoped_token_gets_403_before_its_rollout_body_is_judged(hub):
    service, client = hub
    reader, _ = service.tokens.create("viewer", ["read"])
    for body in (b"{", b"[]", b'{"id": "r9"}'):
        r = client.post("/v1/rollouts", content=body, headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 403, (body, r.status_code, r.text)
    r = client.post("/v1/rollouts", content=b"{")
    assert r.status_code == 422 and r.json()["error"].startswith("rollout")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFoundError("x"), 404),
        (RolloutNotFoundError("x"), 404),
        (ConflictError("x"), 409),
        (RolloutConflictError("x"), 409),
        (RolloutStateError("x"), 409),
        (UnavailableError("x"), 503),
        (RolloutStoreError("x"), 503),
        (StoreError("x"), 503),
        (RolloutError("x"), 422),
        (ValidationError("x"), 422),
        (HubError("x"), 422),
    ],
)
def test_each_kind_of_hub_error_has_its_status(error, status):
    assert status_of(error) == status


def test_real_refusals_get_the_status_of_their_kind(hub):
    service, client = hub
    spec = service.rollouts.get("r1").rollout.spec
    cases = [
        (client.get("/v1/devices/nobody"), 404, "no device 'nobody'"),
        (client.get("/v1/rollouts/nope"), 404, "rollout 'nope': not found"),
        (client.post("/v1/rollouts/nope/pause"), 404, "rollout 'nope': not found"),
        (client.get("/v1/models/pump/versions/9/drift"), 404, "no model 'pump' v9"),
        (client.post("/v1/devices/dev-0/deploy", json={"name": "pump", "version": 9}), 404,
         "no model 'pump' v9"),
        (client.post("/v1/rollouts", json=spec.to_json()), 409, "rollout r1: already exists"),
        (client.post("/v1/rollouts/r1/resume"), 409, "rollout r1: cannot resume while running"),
        (client.post("/v1/rollouts", json={**spec.to_json(), "id": "r5", "target_version": 9}),
         422, "no registered model 'pump' v9"),
        (client.get("/v1/models/pump/versions/1/drift", params={"psi": 0, "js": 0}), 422,
         "set at least one effect threshold"),
        (client.delete("/v1/tokens/abc123"), 404, "no token with id 'abc123'"),
    ]  # fmt: skip
    for r, status, message in cases:
        assert r.status_code == status, (r.request.url, r.status_code, r.text)
        assert message in r.json()["error"] and set(r.json()) == {"error"}, r.text


def test_a_hub_without_a_store_says_so(tmp_path):
    tokens = TokenStore(tmp_path / "hub.db")
    reader, _ = tokens.create("r", ["read"])
    with ApiServer(create_app(HubContext(tokens=tokens))) as server:
        r = httpx.get(f"{server.url}/v1/devices", headers={"Authorization": f"Bearer {reader}"})
    tokens.close()
    assert r.status_code == 503 and r.json() == {"error": "the store is not running"}
