"""API tokens: ``/v1/whoami`` and ``/v1/tokens`` (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.context import AdminToken, Hub, ReadToken, TokenId
from hub.api.documents import CreatedTokenOut, TokenOut, TokenRequest, WhoAmIOut
from hub.errors import NotFoundError
from hub.tokens import TokenError

router = APIRouter(tags=["tokens"])


@router.get("/v1/whoami", response_model=WhoAmIOut)
def whoami(token: ReadToken) -> WhoAmIOut:
    """The calling token's id, name and scopes."""
    return WhoAmIOut(id=token.id, name=token.name, scopes=sorted(token.scopes))


@router.get("/v1/tokens", response_model=list[TokenOut])
def list_tokens(context: Hub, _: AdminToken) -> list[TokenOut]:
    """Every token's id, name, scopes and state (never a secret)."""
    return [
        TokenOut(id=t.id, name=t.name, scopes=sorted(t.scopes), revoked=t.revoked)
        for t in context.tokens.list()
    ]


@router.post("/v1/tokens", status_code=201, response_model=CreatedTokenOut)
def create_token(body: TokenRequest, context: Hub, caller: AdminToken) -> CreatedTokenOut:
    """Create a token; its secret is in this response only (422: an unknown scope)."""
    text, info = context.tokens.create(body.name, body.scopes)
    context.record(caller, "token.create", info.id, name=info.name, scopes=sorted(info.scopes))
    return CreatedTokenOut(id=info.id, token=text, scopes=sorted(info.scopes))


@router.delete("/v1/tokens/{token_id}", status_code=204)
def revoke_token(token_id: TokenId, context: Hub, caller: AdminToken) -> None:
    """Revoke a token (404: no token has the id)."""
    try:
        context.tokens.revoke(token_id)
    except TokenError as exc:  # revoke's only refusal: no such token
        raise NotFoundError(str(exc)) from exc
    context.record(caller, "token.revoke", token_id)
