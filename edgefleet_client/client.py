"""``HubClient`` and ``AsyncHubClient``: the hub's HTTP API over httpx, typed.

Both build the same requests (:class:`_Call`) and parse the same answers; only the
sending differs. Every method that talks to the hub raises :class:`HubError`: with the
HTTP status and the hub's one-line ``{"error": ...}`` message when it answered with a
failure, with status 0 when no answer came (unreachable, TLS refused, connection lost,
timeout), and with the status and a line naming the field when an answer does not have
the documented shape.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from edgefleet_client.errors import HubError
from edgefleet_client.models import (
    AlertPage,
    AuditPage,
    DeployResult,
    Device,
    DeviceDetail,
    DeviceHistory,
    DevicePage,
    DriftBins,
    DriftHistory,
    DriftResult,
    Event,
    EventPage,
    FleetSummary,
    HubHealth,
    ModelSummary,
    ModelVersionInfo,
    ResponseError,
    Rollout,
    WhoAmI,
    _Obj,
)
from edgefleet_client.specs import RolloutDraft
from edgefleet_client.sse import Backoff, SseParser

T = TypeVar("T")
RolloutCommand = Literal["pause", "resume", "promote", "abort", "rollback"]
AlertState = Literal["firing", "resolved"]
#: Called by the event stream when it connects (True, None) or loses the hub (False, error).
StatusCallback = Callable[[bool, "HubError | None"], None]

_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class _Call:
    """One request and how to parse its answer."""

    method: str
    path: str
    parse: Callable[[Any], Any]
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    #: A raw request body (an uploaded bundle), instead of ``body``'s JSON.
    content: bytes | None = None
    #: A multipart form: its files (name -> (filename, bytes)) and its plain fields.
    files: dict[str, tuple[str, bytes]] | None = None
    data: dict[str, str] | None = None

    def request_args(self) -> dict[str, Any]:
        """The keyword arguments of ``httpx.Client.request`` for this call."""
        args: dict[str, Any] = {"params": self.params or None}
        if self.content is not None:
            args["content"] = self.content
        elif self.files is not None:
            args["files"] = self.files
            args["data"] = self.data
        else:
            args["json"] = self.body
        return args


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the ones left at None (booleans as ``true``/``false``)."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if v is None:
            continue
        out[k] = ("true" if v else "false") if isinstance(v, bool) else v
    return out


def _error_message(response: httpx.Response) -> str:
    """The hub's one-line error, or a line made from what came instead."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return str(doc["error"])
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        return str(doc["detail"])
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return text or (response.reason_phrase or f"HTTP {response.status_code}")


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    raise HubError(response.status_code, _error_message(response))


def _parse(call: _Call, response: httpx.Response) -> Any:
    _raise_for(response)
    if response.status_code == 204:
        return None
    try:
        doc = response.json()
    except ValueError as exc:
        raise HubError(response.status_code, f"{call.path}: the answer is not JSON") from exc
    try:
        return call.parse(doc)
    except ResponseError as exc:
        raise HubError(response.status_code, f"unexpected answer from the hub: {exc}") from exc


def _transport_error(base_url: str, exc: httpx.HTTPError) -> HubError:
    if isinstance(exc, httpx.TimeoutException):
        return HubError(0, f"hub {base_url}: no answer in time ({type(exc).__name__})")
    reason = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        reason = "its TLS certificate is not trusted (give the hub's CA with --hub-ca)"
    return HubError(0, f"hub {base_url} unreachable: {reason}")


def _verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise HubError(0, f"hub CA {ca_file}: cannot be read ({exc})") from exc


def _list_of(key: str, parse: Callable[[Any, str], T]) -> Callable[[Any], tuple[T, ...]]:
    def run(doc: Any) -> tuple[T, ...]:
        o = _Obj(doc, "answer")
        return tuple(parse(v, f"{key}[{i}]") for i, v in enumerate(o.array(key)))

    return run


def _event_from_sse(data: str) -> Event:
    try:
        return Event.from_json(json.loads(data), "stream event")
    except (ValueError, ResponseError) as exc:
        raise HubError(200, f"unexpected event from the hub's stream: {exc}") from exc


class _Calls:
    """The API's requests (shared by the sync and async clients)."""

    @staticmethod
    def health() -> _Call:
        return _Call("GET", "/healthz", HubHealth.from_json)

    @staticmethod
    def whoami() -> _Call:
        return _Call("GET", "/v1/whoami", WhoAmI.from_json)

    @staticmethod
    def devices(
        after: str | None,
        limit: int,
        online: bool | None,
        tag: str | None,
        drift: Sequence[str] | None = None,
        faulty: bool | None = None,
    ) -> _Call:
        params = _params(
            after=after,
            limit=limit,
            online=online,
            tag=tag,
            drift=None if drift is None else list(drift),
            faulty=faulty,
        )
        return _Call("GET", "/v1/devices", DevicePage.from_json, params)

    @staticmethod
    def device(device_id: str) -> _Call:
        return _Call("GET", f"/v1/devices/{device_id}", DeviceDetail.from_json)

    @staticmethod
    def events(device: str | None, after_id: int, limit: int) -> _Call:
        params = _params(device=device, after_id=after_id, limit=limit)
        return _Call("GET", "/v1/events", EventPage.from_json, params)

    @staticmethod
    def latest_events(limit: int, device: str | None) -> _Call:
        parse = _list_of("events", Event.from_json)
        return _Call("GET", "/v1/fleet/events/latest", parse, _params(limit=limit, device=device))

    @staticmethod
    def deploy(device_id: str, name: str, version: int, mode: str, downgrade: bool) -> _Call:
        body = {"name": name, "version": version, "mode": mode, "downgrade": downgrade}
        return _Call("POST", f"/v1/devices/{device_id}/deploy", DeployResult.from_json, body=body)

    @staticmethod
    def models() -> _Call:
        return _Call("GET", "/v1/models", _list_of("models", ModelSummary.from_json))

    @staticmethod
    def versions(name: str) -> _Call:
        parse = _list_of("versions", ModelVersionInfo.from_json)
        return _Call("GET", f"/v1/models/{name}/versions", parse)

    @staticmethod
    def rollouts(active: bool) -> _Call:
        parse = _list_of("rollouts", Rollout.from_json)
        return _Call("GET", "/v1/rollouts", parse, _params(active=active))

    @staticmethod
    def rollout(rollout_id: str, devices: bool) -> _Call:
        params = _params(devices=devices or None)
        return _Call("GET", f"/v1/rollouts/{rollout_id}", Rollout.from_json, params)

    @staticmethod
    def start_rollout(spec: dict[str, Any] | RolloutDraft) -> _Call:
        body = spec.to_json() if isinstance(spec, RolloutDraft) else spec
        return _Call("POST", "/v1/rollouts", Rollout.from_json, body=body)

    @staticmethod
    def rollout_command(rollout_id: str, command: RolloutCommand) -> _Call:
        return _Call("POST", f"/v1/rollouts/{rollout_id}/{command}", Rollout.from_json)

    @staticmethod
    def push_model(
        name: str,
        model: bytes,
        reference: bytes,
        *,
        model_filename: str,
        reference_filename: str,
        schema: bytes | None,
        lineage: str | Mapping[str, Any],
        version: int | None,
    ) -> _Call:
        files = {"model": (model_filename, model), "reference": (reference_filename, reference)}
        if schema is not None:
            files["schema"] = ("schema.json", schema)
        text = lineage if isinstance(lineage, str) else json.dumps(dict(lineage))
        data = {"lineage": text, **({"version": str(version)} if version is not None else {})}
        parse = ModelVersionInfo.from_json
        return _Call("POST", f"/v1/models/{name}/push", parse, files=files, data=data)

    @staticmethod
    def upload_bundle(bundle: bytes) -> _Call:
        return _Call("POST", "/v1/bundles", ModelVersionInfo.from_json, content=bundle)

    @staticmethod
    def drift(
        name: str,
        version: int,
        device: str | None,
        tag: str | None,
        since: float | None,
        alpha: float | None,
    ) -> _Call:
        params = _params(device=device, tag=tag, since=since, alpha=alpha)
        return _Call(
            "GET", f"/v1/models/{name}/versions/{version}/drift", DriftResult.from_json, params
        )

    @staticmethod
    def device_history(
        device_id: str, hours: float, until: float | None, points: int, role: str
    ) -> _Call:
        params = _params(hours=hours, until=until, points=points, role=role)
        return _Call("GET", f"/v1/devices/{device_id}/history", DeviceHistory.from_json, params)

    @staticmethod
    def drift_bins(
        name: str,
        version: int,
        feature: str | None,
        device: str | None,
        tag: str | None,
        since: float | None,
    ) -> _Call:
        params = _params(feature=feature, device=device, tag=tag, since=since)
        path = f"/v1/models/{name}/versions/{version}/drift/bins"
        return _Call("GET", path, DriftBins.from_json, params)

    @staticmethod
    def drift_history(
        name: str,
        version: int,
        hours: float,
        until: float | None,
        device: str | None,
        tag: str | None,
    ) -> _Call:
        params = _params(hours=hours, until=until, device=device, tag=tag)
        path = f"/v1/models/{name}/versions/{version}/drift/history"
        return _Call("GET", path, DriftHistory.from_json, params)

    @staticmethod
    def audit(after_id: int, limit: int) -> _Call:
        params = _params(after_id=after_id, limit=limit)
        return _Call("GET", "/v1/audit", AuditPage.from_json, params)

    @staticmethod
    def alerts(
        state: AlertState | None, open_only: bool, before_id: int | None, limit: int
    ) -> _Call:
        params = _params(state=state, open=open_only or None, before_id=before_id, limit=limit)
        return _Call("GET", "/v1/alerts", AlertPage.from_json, params)

    @staticmethod
    def fleet_summary() -> _Call:
        return _Call("GET", "/v1/fleet/summary", FleetSummary.from_json)

    @staticmethod
    def stream_params(device: str | None, after_id: int, max_events: int | None) -> dict[str, Any]:
        return _params(device=device, after_id=after_id, max_events=max_events)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class HubClient:
    """The hub's API, blocking. Use as a context manager or call :meth:`close`.

    Raises (every method that sends a request): HubError.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        ca_file: Path | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Prepare a connection pool (nothing is sent yet).

        Raises:
            HubError: ``ca_file`` cannot be read.
        """
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_headers(token),
            verify=_verify(ca_file),
            timeout=timeout_s,
            transport=transport,
        )

    def _send(self, call: _Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, **call.request_args())
        except httpx.HTTPError as exc:
            raise _transport_error(self.base_url, exc) from exc
        return _parse(call, response)

    def health(self) -> HubHealth:
        """``/healthz`` (no token needed)."""
        result: HubHealth = self._send(_Calls.health())
        return result

    def whoami(self) -> WhoAmI:
        """The calling token's id, name and scopes."""
        result: WhoAmI = self._send(_Calls.whoami())
        return result

    def devices(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        online: bool | None = None,
        tag: str | None = None,
        drift: Sequence[str] | None = None,
        faulty: bool | None = None,
    ) -> DevicePage:
        """One page of devices in id order (ids above ``after``). ``drift`` keeps the
        devices whose drift verdict is one of these; ``faulty`` True only the devices
        not connected, whose last deployment failed or whose verdict is drift or major
        (False: the others). Raises: HubError: the hub refused (400: a bad value)."""
        call = _Calls.devices(after, limit, online, tag, drift, faulty)
        result: DevicePage = self._send(call)
        return result

    def iter_devices(
        self, *, page_size: int = 500, online: bool | None = None, tag: str | None = None
    ) -> Iterator[Device]:
        """Every device, fetched a page at a time as the iteration goes."""
        after: str | None = None
        while True:
            page = self.devices(after=after, limit=page_size, online=online, tag=tag)
            yield from page.devices
            if page.next is None:
                return
            after = page.next

    def device(self, device_id: str) -> DeviceDetail:
        """One device (404 when unknown)."""
        result: DeviceDetail = self._send(_Calls.device(device_id))
        return result

    def events(
        self, *, device: str | None = None, after_id: int = 0, limit: int = 100
    ) -> EventPage:
        """One page of events, oldest first, ids above ``after_id``."""
        result: EventPage = self._send(_Calls.events(device, after_id, limit))
        return result

    def iter_events(
        self, *, device: str | None = None, after_id: int = 0, page_size: int = 500
    ) -> Iterator[Event]:
        """Every stored event above ``after_id``, a page at a time."""
        while True:
            page = self.events(device=device, after_id=after_id, limit=page_size)
            yield from page.events
            if page.next is None:
                return
            after_id = page.next

    def latest_events(self, *, limit: int = 100, device: str | None = None) -> tuple[Event, ...]:
        """The newest ``limit`` events (of ``device``), oldest first."""
        result: tuple[Event, ...] = self._send(_Calls.latest_events(limit, device))
        return result

    def deploy(
        self,
        device_id: str,
        name: str,
        version: int,
        *,
        mode: Literal["active", "shadow"] = "active",
        downgrade: bool = False,
    ) -> DeployResult:
        """Sign and publish a device's desired state (needs the ``deploy`` scope)."""
        result: DeployResult = self._send(_Calls.deploy(device_id, name, version, mode, downgrade))
        return result

    def models(self) -> tuple[ModelSummary, ...]:
        """Every model with its latest version."""
        result: tuple[ModelSummary, ...] = self._send(_Calls.models())
        return result

    def versions(self, name: str) -> tuple[ModelVersionInfo, ...]:
        """Every version of a model."""
        result: tuple[ModelVersionInfo, ...] = self._send(_Calls.versions(name))
        return result

    def push_model(
        self,
        name: str,
        model: bytes,
        reference: bytes,
        *,
        model_filename: str = "model.tflite",
        reference_filename: str = "reference.npz",
        schema: bytes | None = None,
        lineage: str | Mapping[str, Any] = "{}",
        version: int | None = None,
    ) -> ModelVersionInfo:
        """Register a model: the hub builds a bundle from ``model`` (a .tflite) and
        ``reference`` (.npz, or .csv when ``reference_filename`` ends so), with an optional
        input ``schema`` (JSON bytes) and ``lineage`` (a JSON object, or its text), signs it
        with its keys and registers it as ``version`` (default: the next). Needs ``deploy``.

        Raises:
            HubError: 422 with the hub's reason for a model, reference, schema, lineage or
                version it refuses, 413 past its upload limit.
        """
        call = _Calls.push_model(
            name,
            model,
            reference,
            model_filename=model_filename,
            reference_filename=reference_filename,
            schema=schema,
            lineage=lineage,
            version=version,
        )
        result: ModelVersionInfo = self._send(call)
        return result

    def upload_bundle(self, bundle: bytes) -> ModelVersionInfo:
        """Register a bundle signed elsewhere (the ``.efb`` file's bytes) as it is; the
        hub verifies it against its trust first. Needs ``deploy``.

        Raises:
            HubError: 422 with the reason for a bundle that does not verify, 413 past the
                hub's upload limit.
        """
        result: ModelVersionInfo = self._send(_Calls.upload_bundle(bundle))
        return result

    def rollouts(self, *, active: bool = False) -> tuple[Rollout, ...]:
        """Rollouts, newest last (only running/waiting/paused ones with ``active``)."""
        result: tuple[Rollout, ...] = self._send(_Calls.rollouts(active))
        return result

    def rollout(self, rollout_id: str, *, devices: bool = False) -> Rollout:
        """One rollout (with ``devices``, each stage's devices by state)."""
        result: Rollout = self._send(_Calls.rollout(rollout_id, devices))
        return result

    def start_rollout(self, spec: dict[str, Any] | RolloutDraft) -> Rollout:
        """Start a rollout from a draft or its spec's JSON (needs ``deploy``)."""
        result: Rollout = self._send(_Calls.start_rollout(spec))
        return result

    def rollout_command(self, rollout_id: str, command: RolloutCommand) -> Rollout:
        """Pause, resume, promote, abort or roll back a rollout (needs ``deploy``)."""
        result: Rollout = self._send(_Calls.rollout_command(rollout_id, command))
        return result

    def drift(
        self,
        name: str,
        version: int,
        *,
        device: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        alpha: float | None = None,
    ) -> DriftResult:
        """A version's drift over the fleet, one device or a tag cohort (``since``: windows
        ending after it; ``alpha``: the family-wise false-alarm rate, default the hub's).

        Raises:
            HubError: 404 for an unknown model version, 422 for a rule that cannot decide.
        """
        result: DriftResult = self._send(_Calls.drift(name, version, device, tag, since, alpha))
        return result

    def device_history(
        self,
        device_id: str,
        *,
        hours: float = 6.0,
        until: float | None = None,
        points: int = 240,
        role: Literal["active", "shadow"] = "active",
    ) -> DeviceHistory:
        """A device's predictions, p95 latency and error rate over the ``hours`` before
        ``until`` (default: the hub's now), in at most ``points`` buckets.

        Raises:
            HubError: 404 for an unknown device, 400 for a bad parameter.
        """
        call = _Calls.device_history(device_id, hours, until, points, role)
        result: DeviceHistory = self._send(call)
        return result

    def drift_bins(
        self,
        name: str,
        version: int,
        *,
        feature: str | None = None,
        device: str | None = None,
        tag: str | None = None,
        since: float | None = None,
    ) -> DriftBins:
        """One feature's reference vs live bins (default: the first feature) over the
        fleet, a device or a tag cohort.

        Raises:
            HubError: 404 for an unknown version, 400 for an unknown feature.
        """
        call = _Calls.drift_bins(name, version, feature, device, tag, since)
        result: DriftBins = self._send(call)
        return result

    def drift_history(
        self,
        name: str,
        version: int,
        *,
        hours: float = 24.0,
        until: float | None = None,
        device: str | None = None,
        tag: str | None = None,
    ) -> DriftHistory:
        """PSI and verdict per feature for each hour of the ``hours`` before ``until``.

        Raises:
            HubError: 404 for an unknown version, 400 for a bad parameter.
        """
        call = _Calls.drift_history(name, version, hours, until, device, tag)
        result: DriftHistory = self._send(call)
        return result

    def audit(self, *, after_id: int = 0, limit: int = 100) -> AuditPage:
        """A page of the audit log (needs ``admin``)."""
        result: AuditPage = self._send(_Calls.audit(after_id, limit))
        return result

    def fleet_summary(self) -> FleetSummary:
        """Device counts by state and version."""
        result: FleetSummary = self._send(_Calls.fleet_summary())
        return result

    def alerts(
        self,
        *,
        state: AlertState | None = None,
        open_only: bool = False,
        before_id: int | None = None,
        limit: int = 100,
    ) -> AlertPage:
        """Recorded alert transitions, newest first (ids below ``before_id``): only
        ``state`` ones, or with ``open_only`` only the firings still in force."""
        result: AlertPage = self._send(_Calls.alerts(state, open_only, before_id, limit))
        return result

    def stream_events(
        self,
        *,
        after_id: int = 0,
        device: str | None = None,
        reconnect: bool = True,
        max_events: int | None = None,
        backoff: Backoff | None = None,
        on_status: StatusCallback | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[Event]:
        """New events as the hub stores them (``/v1/events/stream``), from ids above
        ``after_id``. A dropped connection or a hub that is down is retried with
        back-off, resuming after the last event received (never a duplicate, never a
        gap); ``on_status`` hears each connect and loss. Without ``reconnect`` the first
        loss raises and the server ending the stream ends the iteration.

        Raises:
            HubError: the hub refused the stream (401/403/4xx, never retried), or a loss
                without ``reconnect``, or an event that does not parse.
        """
        backoff = backoff or Backoff()
        last = after_id
        sent = 0
        while max_events is None or sent < max_events:
            remaining = None if max_events is None else max_events - sent
            try:
                with self._http.stream(
                    "GET",
                    "/v1/events/stream",
                    params=_Calls.stream_params(device, last, remaining),
                    timeout=httpx.Timeout(10.0, read=60.0),
                ) as response:
                    if not response.is_success:
                        response.read()
                        error = HubError(response.status_code, _error_message(response))
                        if response.status_code not in _RETRYABLE or not reconnect:
                            raise error
                        raise _RetryError(error)
                    backoff.reset()
                    if on_status:
                        on_status(True, None)
                    parser = SseParser()
                    for line in response.iter_lines():
                        msg = parser.feed(line)
                        if msg is None or msg.event != "deployment":
                            continue
                        event = _event_from_sse(msg.data)
                        last, sent = event.id, sent + 1
                        yield event
                if not reconnect:
                    return
            except (httpx.HTTPError, _RetryError) as exc:
                error = (
                    exc.error
                    if isinstance(exc, _RetryError)
                    else _transport_error(self.base_url, exc)
                )
                if on_status:
                    on_status(False, error)
                if not reconnect:
                    raise error from exc
                sleep(backoff.next_delay())

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RetryError(Exception):
    """A retryable refusal of the event stream (5xx, 429)."""

    def __init__(self, error: HubError) -> None:
        super().__init__(str(error))
        self.error = error


class AsyncHubClient:
    """The hub's API for asyncio; the same methods as :class:`HubClient`, awaited.

    Raises (every method that sends a request): HubError.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        ca_file: Path | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Prepare a connection pool (nothing is sent yet).

        Raises:
            HubError: ``ca_file`` cannot be read.
        """
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(token),
            verify=_verify(ca_file),
            timeout=timeout_s,
            transport=transport,
        )

    async def _send(self, call: _Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, **call.request_args())
        except httpx.HTTPError as exc:
            raise _transport_error(self.base_url, exc) from exc
        return _parse(call, response)

    async def health(self) -> HubHealth:
        """``/healthz`` (no token needed)."""
        result: HubHealth = await self._send(_Calls.health())
        return result

    async def whoami(self) -> WhoAmI:
        """The calling token's id, name and scopes."""
        result: WhoAmI = await self._send(_Calls.whoami())
        return result

    async def devices(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        online: bool | None = None,
        tag: str | None = None,
        drift: Sequence[str] | None = None,
        faulty: bool | None = None,
    ) -> DevicePage:
        """One page of devices in id order (ids above ``after``). ``drift`` keeps the
        devices whose drift verdict is one of these; ``faulty`` True only the devices
        not connected, whose last deployment failed or whose verdict is drift or major
        (False: the others). Raises: HubError: the hub refused (400: a bad value)."""
        call = _Calls.devices(after, limit, online, tag, drift, faulty)
        result: DevicePage = await self._send(call)
        return result

    async def iter_devices(
        self, *, page_size: int = 500, online: bool | None = None, tag: str | None = None
    ) -> AsyncIterator[Device]:
        """Every device, fetched a page at a time as the iteration goes."""
        after: str | None = None
        while True:
            page = await self.devices(after=after, limit=page_size, online=online, tag=tag)
            for d in page.devices:
                yield d
            if page.next is None:
                return
            after = page.next

    async def device(self, device_id: str) -> DeviceDetail:
        """One device (404 when unknown)."""
        result: DeviceDetail = await self._send(_Calls.device(device_id))
        return result

    async def events(
        self, *, device: str | None = None, after_id: int = 0, limit: int = 100
    ) -> EventPage:
        """One page of events, oldest first, ids above ``after_id``."""
        result: EventPage = await self._send(_Calls.events(device, after_id, limit))
        return result

    async def iter_events(
        self, *, device: str | None = None, after_id: int = 0, page_size: int = 500
    ) -> AsyncIterator[Event]:
        """Every stored event above ``after_id``, a page at a time."""
        while True:
            page = await self.events(device=device, after_id=after_id, limit=page_size)
            for e in page.events:
                yield e
            if page.next is None:
                return
            after_id = page.next

    async def latest_events(
        self, *, limit: int = 100, device: str | None = None
    ) -> tuple[Event, ...]:
        """The newest ``limit`` events (of ``device``), oldest first."""
        result: tuple[Event, ...] = await self._send(_Calls.latest_events(limit, device))
        return result

    async def deploy(
        self,
        device_id: str,
        name: str,
        version: int,
        *,
        mode: Literal["active", "shadow"] = "active",
        downgrade: bool = False,
    ) -> DeployResult:
        """Sign and publish a device's desired state (needs the ``deploy`` scope)."""
        call = _Calls.deploy(device_id, name, version, mode, downgrade)
        result: DeployResult = await self._send(call)
        return result

    async def models(self) -> tuple[ModelSummary, ...]:
        """Every model with its latest version."""
        result: tuple[ModelSummary, ...] = await self._send(_Calls.models())
        return result

    async def versions(self, name: str) -> tuple[ModelVersionInfo, ...]:
        """Every version of a model."""
        result: tuple[ModelVersionInfo, ...] = await self._send(_Calls.versions(name))
        return result

    async def push_model(
        self,
        name: str,
        model: bytes,
        reference: bytes,
        *,
        model_filename: str = "model.tflite",
        reference_filename: str = "reference.npz",
        schema: bytes | None = None,
        lineage: str | Mapping[str, Any] = "{}",
        version: int | None = None,
    ) -> ModelVersionInfo:
        """Register a model: the hub builds a bundle from ``model`` (a .tflite) and
        ``reference`` (.npz, or .csv when ``reference_filename`` ends so), with an optional
        input ``schema`` (JSON bytes) and ``lineage`` (a JSON object, or its text), signs it
        with its keys and registers it as ``version`` (default: the next). Needs ``deploy``.

        Raises:
            HubError: 422 with the hub's reason for a model, reference, schema, lineage or
                version it refuses, 413 past its upload limit.
        """
        call = _Calls.push_model(
            name,
            model,
            reference,
            model_filename=model_filename,
            reference_filename=reference_filename,
            schema=schema,
            lineage=lineage,
            version=version,
        )
        result: ModelVersionInfo = await self._send(call)
        return result

    async def upload_bundle(self, bundle: bytes) -> ModelVersionInfo:
        """Register a bundle signed elsewhere (the ``.efb`` file's bytes) as it is; the
        hub verifies it against its trust first. Needs ``deploy``.

        Raises:
            HubError: 422 with the reason for a bundle that does not verify, 413 past the
                hub's upload limit.
        """
        result: ModelVersionInfo = await self._send(_Calls.upload_bundle(bundle))
        return result

    async def rollouts(self, *, active: bool = False) -> tuple[Rollout, ...]:
        """Rollouts, newest last (only running/waiting/paused ones with ``active``)."""
        result: tuple[Rollout, ...] = await self._send(_Calls.rollouts(active))
        return result

    async def rollout(self, rollout_id: str, *, devices: bool = False) -> Rollout:
        """One rollout (with ``devices``, each stage's devices by state)."""
        result: Rollout = await self._send(_Calls.rollout(rollout_id, devices))
        return result

    async def start_rollout(self, spec: dict[str, Any] | RolloutDraft) -> Rollout:
        """Start a rollout from a draft or its spec's JSON (needs ``deploy``)."""
        result: Rollout = await self._send(_Calls.start_rollout(spec))
        return result

    async def rollout_command(self, rollout_id: str, command: RolloutCommand) -> Rollout:
        """Pause, resume, promote, abort or roll back a rollout (needs ``deploy``)."""
        result: Rollout = await self._send(_Calls.rollout_command(rollout_id, command))
        return result

    async def drift(
        self,
        name: str,
        version: int,
        *,
        device: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        alpha: float | None = None,
    ) -> DriftResult:
        """As :meth:`HubClient.drift`.

        Raises:
            HubError: as :meth:`HubClient.drift`.
        """
        call = _Calls.drift(name, version, device, tag, since, alpha)
        result: DriftResult = await self._send(call)
        return result

    async def device_history(
        self,
        device_id: str,
        *,
        hours: float = 6.0,
        until: float | None = None,
        points: int = 240,
        role: Literal["active", "shadow"] = "active",
    ) -> DeviceHistory:
        """As :meth:`HubClient.device_history`.

        Raises:
            HubError: as :meth:`HubClient.device_history`.
        """
        call = _Calls.device_history(device_id, hours, until, points, role)
        result: DeviceHistory = await self._send(call)
        return result

    async def drift_bins(
        self,
        name: str,
        version: int,
        *,
        feature: str | None = None,
        device: str | None = None,
        tag: str | None = None,
        since: float | None = None,
    ) -> DriftBins:
        """As :meth:`HubClient.drift_bins`.

        Raises:
            HubError: as :meth:`HubClient.drift_bins`.
        """
        call = _Calls.drift_bins(name, version, feature, device, tag, since)
        result: DriftBins = await self._send(call)
        return result

    async def drift_history(
        self,
        name: str,
        version: int,
        *,
        hours: float = 24.0,
        until: float | None = None,
        device: str | None = None,
        tag: str | None = None,
    ) -> DriftHistory:
        """As :meth:`HubClient.drift_history`.

        Raises:
            HubError: as :meth:`HubClient.drift_history`.
        """
        call = _Calls.drift_history(name, version, hours, until, device, tag)
        result: DriftHistory = await self._send(call)
        return result

    async def audit(self, *, after_id: int = 0, limit: int = 100) -> AuditPage:
        """A page of the audit log (needs ``admin``)."""
        result: AuditPage = await self._send(_Calls.audit(after_id, limit))
        return result

    async def fleet_summary(self) -> FleetSummary:
        """Device counts by state and version."""
        result: FleetSummary = await self._send(_Calls.fleet_summary())
        return result

    async def alerts(
        self,
        *,
        state: AlertState | None = None,
        open_only: bool = False,
        before_id: int | None = None,
        limit: int = 100,
    ) -> AlertPage:
        """As :meth:`HubClient.alerts`."""
        result: AlertPage = await self._send(_Calls.alerts(state, open_only, before_id, limit))
        return result

    async def stream_events(
        self,
        *,
        after_id: int = 0,
        device: str | None = None,
        reconnect: bool = True,
        max_events: int | None = None,
        backoff: Backoff | None = None,
        on_status: StatusCallback | None = None,
    ) -> AsyncIterator[Event]:
        """As :meth:`HubClient.stream_events`, for asyncio (cancel the task to stop).

        Raises:
            HubError: as :meth:`HubClient.stream_events`.
        """
        backoff = backoff or Backoff()
        last = after_id
        sent = 0
        while max_events is None or sent < max_events:
            remaining = None if max_events is None else max_events - sent
            try:
                async with self._http.stream(
                    "GET",
                    "/v1/events/stream",
                    params=_Calls.stream_params(device, last, remaining),
                    timeout=httpx.Timeout(10.0, read=60.0),
                ) as response:
                    if not response.is_success:
                        await response.aread()
                        error = HubError(response.status_code, _error_message(response))
                        if response.status_code not in _RETRYABLE or not reconnect:
                            raise error
                        raise _RetryError(error)
                    backoff.reset()
                    if on_status:
                        on_status(True, None)
                    parser = SseParser()
                    async for line in response.aiter_lines():
                        msg = parser.feed(line)
                        if msg is None or msg.event != "deployment":
                            continue
                        event = _event_from_sse(msg.data)
                        last, sent = event.id, sent + 1
                        yield event
                if not reconnect:
                    return
            except (httpx.HTTPError, _RetryError) as exc:
                error = (
                    exc.error
                    if isinstance(exc, _RetryError)
                    else _transport_error(self.base_url, exc)
                )
                if on_status:
                    on_status(False, error)
                if not reconnect:
                    raise error from exc
                await asyncio.sleep(backoff.next_delay())

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHubClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
