"""The API against careless and hostile clients: it refuses early, in one line, never 5xx.

A running hub (real uvicorn, embedded broker, registry with a pushed model): every route
is called with malformed path parameters, query values and bodies, with and without a
token; a large anonymous upload is refused before the hub reads it.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from hub.api import ApiServer, HubContext, create_app
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.service import HubService, HubSettings

pytestmark = pytest.mark.timeout(120)

#: Values a careless or hostile client puts where an identifier goes.
BAD_SEGMENTS = (
    "ABCDEF",  # uppercase
    "abc",  # short
    "a" * 63 + "\\",  # backslash
    "..",
    "%2e%2e%2fetc",
    "x" * 300,
    "%00",
    "-1",
    "0",
    str(2**70),
    "%F0%9F%92%A5",
    "a%20b",
)
BAD_QUERIES = (
    {"limit": "0"},
    {"limit": "x"},
    {"limit": str(2**70)},
    {"after_id": "-1"},
    {"after_id": str(2**70)},
    {"after": "\x00"},
    {"since": "nan"},
    {"since": "inf"},
    {"min_count": str(2**80)},
    {"expires": str(2**80), "sig": "zz"},
    {"device": "x" * 5000},
    {"active": "maybe"},
    {"max_events": "0"},
    {"state": "burning"},
    {"before_id": "0"},
    {"open": "maybe"},
    {"hours": "nan"},
    {"hours": "-1"},
    {"hours": str(2**70)},
    {"until": "inf"},
    {"until": "-5"},
    {"points": "0"},
    {"feature": "\x00" * 300},
    {"role": "boss"},
    {"tag": ""},
)
BAD_BODIES = (
    b"",
    b"{",
    b"[]",
    b"null",
    b'{"name": 1}',
    b'{"name": "pump", "version": 18446744073709551616}',
    b'{"id": "r1", "model": "pump", "version": -1, "stages": "x"}',
    b"\xff\xfe",
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, demo_dir, reference_x):
    data = tmp_path_factory.mktemp("hostile") / "hub"
    settings = HubSettings(data_dir=data, api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        admin, _ = service.tokens.create("admin", ["admin", "deploy", "read"])
        ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        service.registry.push_model(
            (demo_dir / "model-int8.tflite").read_bytes(), name="pump", reference=ref
        )
        yield service, admin


def routes(service: HubService) -> list[APIRoute]:
    """Every API route, those of included routers too (FastAPI lists an included router
    as one entry, ``_IncludedRouter``, holding its routes; none adds a prefix here)."""
    app = service.api.server.config.app

    def flat(items: list[Any]) -> list[APIRoute]:
        out: list[APIRoute] = []
        for r in items:
            if isinstance(r, APIRoute):
                out.append(r)
            elif hasattr(r, "original_router"):
                out += flat(r.original_router.routes)
        return out

    return flat(app.routes)


def fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: value, path)


def check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, f"{what}: error shape {body}"
        assert body["error"] and "\n" not in body["error"], f"{what}: {body}"
        assert "Traceback" not in response.text, what


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def test_every_route_survives_malformed_path_parameters(hub):
    service, admin = hub
    url = service.api.url
    auth = {"Authorization": f"Bearer {admin}"}
    walked = 0
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        for route in routes(service):
            if "{" not in route.path:
                continue
            for method in sorted(route.methods):
                if route.path.endswith("/stream"):
                    continue
                for value in BAD_SEGMENTS:
                    path = fill(route.path, value)
                    check(client.request(method, path, content=b"{}"), f"{method} {path}")
                    walked += 1
    assert walked >= 10 * len(BAD_SEGMENTS)  # the walk really covered the parameterised routes
    paths = {r.path for r in routes(service)}
    for history in (  # the fleet and history routes are in the walk too
        "/v1/fleet/summary",
        "/v1/devices/{device_id}/history",
        "/v1/models/{name}/versions/{version}/drift/bins",
        "/v1/models/{name}/versions/{version}/drift/history",
    ):
        assert history in paths, history


def test_every_route_survives_malformed_queries_and_bodies(hub):
    service, admin = hub
    url = service.api.url
    auth = {"Authorization": f"Bearer {admin}"}
    good = {
        "name": "pump",
        "version": "1",
        "sha256": "0" * 64,
        "device_id": "dev-1",
        "rollout_id": "r1",
        "command": "pause",
        "token_id": "abc123",
    }
    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        for route in routes(service):
            path = route.path
            for key, value in good.items():
                path = path.replace("{" + key + "}", value)
            for method in sorted(route.methods):
                if path.endswith("/stream"):
                    query = {"max_events": "1", "after_id": str(2**70)}
                    check(client.get(path, params=query), f"GET {path}")
                    continue
                for query in BAD_QUERIES:
                    check(client.request(method, path, params=query), f"{method} {path} {query}")
                if method in {"POST", "PUT", "PATCH"}:
                    for body in BAD_BODIES:
                        r = client.request(
                            method, path, content=body, headers={"Content-Type": "application/json"}
                        )
                        check(r, f"{method} {path} {body!r}")


def test_bad_bundle_hashes_are_a_400_not_a_traceback(hub):
    service, admin = hub
    auth = {"Authorization": f"Bearer {admin}"}
    for bad in ("ABC", "A" * 64, "a" * 63 + "\\", "g" * 64):
        r = httpx.get(f"{service.api.url}/v1/bundles/{bad}", headers=auth)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert "64 lowercase hex" in r.json()["error"] or "pattern" in r.json()["error"]
    r = httpx.get(f"{service.api.url}/v1/bundles/{'0' * 64}", headers=auth)
    assert r.status_code == 404 and r.json() == {"error": "no such bundle"}


def test_anonymous_huge_upload_is_refused_before_the_body_is_read(hub):
    """A 1 GiB multipart push without a token: 401 at once, the body never read."""
    service, _ = hub
    host, port = service.api.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/models/pump/push HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {1 << 30}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        reply = read_reply(sock)
        # the answer came with nothing of the body sent
        assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
        assert b'{"error":"missing, unknown or revoked token"}' in reply


def test_chunked_upload_past_the_limit_is_cut_off(hub):
    """A body that declares no length is counted as it streams and refused at the limit."""
    service, admin = hub
    context = HubContext(tokens=service.tokens, registry=service.registry, max_upload_bytes=1 << 20)
    limit = 2 * (1 << 20) + (1 << 20)
    streamed = 0

    def body():
        nonlocal streamed
        yield (
            b'--x\r\nContent-Disposition: form-data; name="model"; filename="m.tflite"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        while streamed <= 4 * limit:
            streamed += 1 << 16
            yield b"\0" * (1 << 16)

    with ApiServer(create_app(context)) as server:
        try:
            r = httpx.post(
                f"{server.url}/v1/models/pump/push",
                headers={
                    "Authorization": f"Bearer {admin}",
                    "Content-Type": "multipart/form-data; boundary=x",
                },
                content=body(),
                timeout=60,
            )
        except httpx.TransportError:  # the hub may close while the client still sends
            r = None
    if r is not None:
        assert r.status_code == 413, (r.status_code, r.text[:200])
        assert r.json()["error"] == f"request body over {limit} bytes"
    assert streamed < 4 * limit  # the client was stopped long before its body ended


def test_declared_length_over_the_limit_is_refused_without_reading(hub):
    service, admin = hub
    host, port = service.api.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/bundles HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {admin}\r\n"
        f"Content-Length: {1 << 40}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"request body over" in reply


def test_errors_have_one_shape(hub):
    service, admin = hub
    url = service.api.url
    r = httpx.get(f"{url}/v1/whoami")
    assert r.status_code == 401 and r.json() == {"error": "missing, unknown or revoked token"}
    r = httpx.get(
        f"{url}/v1/devices", params={"limit": "x"}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert r.status_code == 400 and r.json()["error"].startswith("query.limit:")
    r = httpx.post(
        f"{url}/v1/tokens", json={"name": ""}, headers={"Authorization": f"Bearer {admin}"}
    )
    assert r.status_code == 422 and r.json()["error"].startswith("body.")


def test_hub_stops_with_an_event_stream_open(tmp_path):
    """An open server-sent event stream (a console) ends when the hub stops: the API
    thread is gone once stop() returns (it used to outlive a 10 s join) and the client
    sees the stream end, not a broken connection."""
    import threading

    settings = HubSettings(data_dir=tmp_path / "hub", api_port=0, embedded_broker_port=free_port())
    service = HubService(settings).start()
    token, _ = service.tokens.create("console", ["read"])
    opened, ended = threading.Event(), []

    def watch() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.stream("GET", f"{service.api.url}/v1/events/stream", headers=headers,
                              timeout=60) as r:  # fmt: skip
                opened.set()
                for _ in r.iter_lines():
                    pass
            ended.append("clean")
        except httpx.HTTPError as exc:
            ended.append(type(exc).__name__)

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    assert opened.wait(30), "the stream never opened"
    service.stop()
    assert service.api._thread is not None and not service.api._thread.is_alive()
    reader.join(30)
    assert ended == ["clean"]
