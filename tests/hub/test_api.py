"""The hub's HTTP API on a real uvicorn server over loopback: authentication and scopes."""

from __future__ import annotations

import httpx
import pytest

from hub.api import ApiServer, HubContext, create_app
from hub.tokens import TokenStore


@pytest.fixture
def api(tmp_path):
    tokens = TokenStore(tmp_path / "hub.db")
    admin, _ = tokens.create("bootstrap", ["admin"])
    reader, _ = tokens.create("dashboard", ["read"])
    with ApiServer(create_app(HubContext(tokens=tokens))) as server:
        yield server.url, tokens, admin, reader
    tokens.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_healthz_needs_no_token(api):
    url, *_ = api
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"


def test_missing_token_gets_401_and_no_data(api):
    url, *_ = api
    r = httpx.get(f"{url}/v1/tokens")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "bootstrap" not in r.text


@pytest.mark.parametrize("token", ["nonsense", "efb_000000000000_guess", "efb__", "efb_x"])
def test_wrong_token_gets_401(api, token):
    url, *_ = api
    assert httpx.get(f"{url}/v1/whoami", headers=auth(token)).status_code == 401


def test_under_scoped_token_gets_403_and_no_data(api):
    url, _, _, reader = api
    r = httpx.get(f"{url}/v1/tokens", headers=auth(reader))
    assert r.status_code == 403
    assert "bootstrap" not in r.text


def test_admin_creates_a_token_whose_secret_is_never_listed(api):
    url, tokens, admin, _ = api
    r = httpx.post(
        f"{url}/v1/tokens", headers=auth(admin), json={"name": "ci", "scopes": ["deploy"]}
    )
    assert r.status_code == 201
    created = r.json()
    assert httpx.get(f"{url}/v1/whoami", headers=auth(created["token"])).json()["scopes"] == [
        "deploy"
    ]
    listed = httpx.get(f"{url}/v1/tokens", headers=auth(admin)).text
    secret = created["token"].split("_", 2)[2]
    assert secret not in listed
    assert secret not in (tokens._db.execute("SELECT * FROM api_tokens").fetchall().__repr__())


def test_token_database_is_private(api, tmp_path):
    assert (tmp_path / "hub.db").stat().st_mode & 0o077 == 0


def test_revoked_token_is_refused(api):
    url, tokens, admin, _ = api
    text, info = tokens.create("temp", ["read"])
    assert httpx.get(f"{url}/v1/whoami", headers=auth(text)).status_code == 200
    assert httpx.delete(f"{url}/v1/tokens/{info.id}", headers=auth(admin)).status_code == 204
    assert httpx.get(f"{url}/v1/whoami", headers=auth(text)).status_code == 401


def test_unknown_scope_is_refused_with_a_clear_error(api):
    url, _, admin, _ = api
    r = httpx.post(f"{url}/v1/tokens", headers=auth(admin), json={"name": "x", "scopes": ["root"]})
    assert r.status_code == 422
    assert "scopes must be some of" in r.text


def test_openapi_document_lists_the_endpoints(api):
    url, *_ = api
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/healthz", "/v1/whoami", "/v1/tokens"} <= set(paths)
