"""The typed hub client against a real hub on loopback (the seeded fleet of
tests/support/fleet.py), sync and async."""

from __future__ import annotations

import asyncio
import json
import threading

import httpx
import pytest

from edge_agent.contract.messages import Event as WireEvent
from edge_agent.contract.messages import EventKind, ModelVersion
from edgefleet_client import AsyncHubClient, HubClient, HubError, RolloutDraft
from edgefleet_client.sse import Backoff, SseParser
from hub.broker import free_port
from hub.rollouts import RolloutSpec, Selector, Stage
from tests.support.fleet import DEVICES, T0, record_alerts, record_windows, running_fleet
from tests.support.tcp_proxy import TcpProxy
from tests.support.tls import make_tls

pytestmark = pytest.mark.timeout(90)


def client(fleet, scope: str = "admin") -> HubClient:
    return HubClient(fleet.url, fleet.tokens[scope])


def test_devices_are_typed_and_paged_by_after(fleet):
    with client(fleet, "read") as hub:
        first = hub.devices(limit=2)
        assert [d.id for d in first.devices] == ["pump-01", "pump-02"]
        assert first.next == "pump-02"
        everyone = list(hub.iter_devices(page_size=2))
        assert [d.id for d in everyone] == [d[0] for d in DEVICES]
        two = next(d for d in everyone if d.id == "pump-02")
        assert two.tags == ("line-2", "site-a")
        assert two.active is not None and two.active.label == "pump:v1"
        assert two.shadow is not None and two.shadow.version == 2
        assert two.buffer_depth == 3 and two.online and two.last_seen == T0 - 60
        assert two.health.cpu_percent == 13.5 and two.health.rss_bytes == 41 << 20
        assert [d.id for d in hub.iter_devices(online=False)] == ["pump-03", "pump-05"]
        assert [d.id for d in hub.iter_devices(tag="line-1")] == ["pump-01", "pump-05"]


def test_drift_verdicts_and_the_drift_and_faulty_filters_sync_and_async(
    tmp_path, demo_dir, reference_x
):
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path / "hub", model, reference_x) as fleet:
        record_windows(fleet.service, model, reference_x, device="pump-02", now=T0)
        with client(fleet, "read") as hub:
            verdicts = {d.id: d.drift for d in hub.iter_devices()}
            assert verdicts["pump-02"] in ("drift", "major")
            assert verdicts["pump-01"] == "insufficient" and verdicts["pump-05"] is None
            assert hub.device("pump-02").drift == verdicts["pump-02"]
            drifted = hub.devices(drift=["drift", "major"])
            assert [d.id for d in drifted.devices] == ["pump-02"]
            faulty = hub.devices(faulty=True)
            assert [d.id for d in faulty.devices] == ["pump-02", "pump-03", "pump-05"]
            with pytest.raises(HubError) as err:
                hub.devices(drift=["bogus"])
            assert err.value.status == 400 and "drift" in err.value.message

        async def both() -> tuple[list[str], list[str]]:
            async with AsyncHubClient(fleet.url, fleet.tokens["read"]) as hub:
                calm = await hub.devices(faulty=False)
                unsure = await hub.devices(drift=["insufficient"], tag="site-a")
                return [d.id for d in calm.devices], [d.id for d in unsure.devices]

        calm, unsure = asyncio.run(both())
        assert calm == ["pump-01", "pump-04", "valve-01"]
        assert unsure == ["pump-01", "pump-03"]


def test_an_older_hub_without_drift_verdicts_still_parses():
    from edgefleet_client.models import Device

    doc = {
        "id": "d", "tags": [], "enrolled_at": None, "last_seen": None, "online": False,
        "offline_since": None, "active": None, "previous": None, "shadow": None,
        "health": {}, "buffer_depth": 0, "revoked_at": None,
    }  # fmt: skip
    assert Device.from_json(doc).drift is None
    assert Device.from_json({**doc, "drift": "none"}).drift == "none"


def test_device_detail_and_unknown_device_carry_the_hubs_message(fleet):
    with client(fleet, "read") as hub:
        detail = hub.device("pump-04")
        assert detail.active is not None and detail.active.version == 2
        assert detail.previous is not None and detail.previous.version == 1
        assert detail.metrics_seq == 0
        with pytest.raises(HubError) as err:
            hub.device("nope")
        assert err.value.status == 404 and err.value.message == "no device 'nope'"


def test_events_page_by_after_id_without_gaps_or_repeats(fleet):
    with client(fleet, "read") as hub:
        everything = hub.events(limit=1000).events
        paged = list(hub.iter_events(page_size=3))
        assert [e.id for e in paged] == [e.id for e in everything]
        assert len({e.id for e in paged}) == len(paged) == 11
        failed = [e for e in hub.iter_events(device="pump-03") if e.kind == "failed"]
        assert failed[0].detail == "smoke test failed" and failed[0].model is not None


def test_missing_and_insufficient_tokens_name_what_is_needed(fleet):
    with HubClient(fleet.url) as anonymous, pytest.raises(HubError) as err:
        anonymous.devices()
    assert err.value.status == 401 and err.value.auth
    with client(fleet, "read") as reader:
        me = reader.whoami()
        assert me.scopes == ("read",) and me.allows("read") and not me.allows("deploy")
        with pytest.raises(HubError) as err:
            reader.deploy("pump-01", "pump", 2)
        assert err.value.status == 403 and "'deploy' scope" in err.value.message
        with pytest.raises(HubError) as err:
            reader.audit()
        assert err.value.status == 403 and "'admin'" in err.value.message


def test_fleet_summary_counts_states_and_versions(fleet):
    with client(fleet, "read") as hub:
        s = hub.fleet_summary()
    assert (s.total, s.online, s.offline, s.never_seen, s.without_model) == (6, 4, 1, 1, 1)
    assert s.buffered_windows == 16
    assert [(v.label, v.active, v.shadow) for v in s.versions] == [
        ("pump:v1", 3, 0),
        ("pump:v2", 2, 1),
    ]


def test_models_versions_drift_and_audit(fleet):
    with client(fleet) as hub:
        assert [(m.name, m.latest_version) for m in hub.models()] == [("pump", 2)]
        versions = hub.versions("pump")
        assert [v.version for v in versions] == [1, 2] and len(versions[0].sha256) == 64
        drift = hub.drift("pump", 2)
        assert drift.n == 0 and drift.report is None and drift.features == ()
        page = hub.audit()
        assert page.verified and page.entries[0].action == "hub.start"


def test_alerts_newest_first_filtered_and_paged(tmp_path, demo_dir, reference_x):
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path / "hub", model, reference_x) as f, client(f, "read") as hub:
        empty = hub.alerts()
        assert (empty.alerts, empty.firing, empty.next) == ((), 0, None)  # no rule ran yet
        record_alerts(f.service)
        page = hub.alerts()
        assert [(a.rule, a.state, a.open) for a in page.alerts] == [
            ("pump-03-offline", "resolved", False),
            ("pump-03-offline", "firing", False),
            ("fleet-offline", "firing", True),
        ]
        assert page.firing == 1 and page.next is None
        assert page.alerts[2].value == pytest.approx(2 / 6) and page.alerts[2].ts == T0 - 120
        assert page.alerts[2].delivery == "no webhook"
        assert [a.rule for a in hub.alerts(open_only=True).alerts] == ["fleet-offline"]
        assert [a.state for a in hub.alerts(state="resolved").alerts] == ["resolved"]
        first = hub.alerts(limit=2)
        assert len(first.alerts) == 2 and first.next == first.alerts[-1].id
        rest = hub.alerts(before_id=first.next, limit=2)
        assert [a.rule for a in rest.alerts] == ["fleet-offline"] and rest.next is None
        for bad in ({"state": "burning"}, {"limit": "0"}, {"before_id": "0"}, {"open": "maybe"}):
            response = httpx.get(
                f"{f.url}/v1/alerts",
                params=bad,
                headers={"Authorization": f"Bearer {f.tokens['read']}"},
            )
            assert response.status_code == 400, bad
            assert set(response.json()) == {"error"}, bad
        with pytest.raises(HubError) as err:
            HubClient(f.url).alerts()
        assert err.value.status == 401


@pytest.mark.parametrize("previous", [None, 1])
def test_a_rollout_draft_is_the_spec_the_cli_builds(previous):
    """The draft's defaults are the CLI's: the same options give the same spec."""
    from edge_agent.contract.directive import Probation
    from hub.rollouts import Gates

    draft = RolloutDraft(
        "r-9", "pump", 2, previous, ("site-a",), (0.1, 0.5, 1.0), 60.0,
        max_psi=0.3, on_failure="rollback", manual=True,
    )  # fmt: skip
    gates = Gates(max_psi=0.3, max_latency_ratio=None if previous is None else 1.5,
                  max_evidence_wait_s=300.0)  # fmt: skip
    expected = RolloutSpec(
        id="r-9", model="pump", target_version=2, previous_version=previous,
        selector=Selector(tags=("site-a",)), on_failure="rollback", on_insufficient="proceed",
        promotion="manual", stages=tuple(Stage(share=s, bake_s=60.0, gates=gates)
                                         for s in (0.1, 0.5, 1.0)),
        probation=Probation(window_s=120.0),
    )  # fmt: skip
    assert RolloutSpec.from_json(draft.to_json()) == expected
    assert draft.to_json() == expected.to_json()


def test_deploy_and_rollout_commands(tmp_path, demo_dir, reference_x):
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path / "hub", model, reference_x) as f, client(f, "deploy") as hub:
        result = hub.deploy("pump-01", "pump", 2, mode="shadow")
        assert (result.device_id, result.version, result.mode) == ("pump-01", 2, "shadow")
        spec = RolloutSpec(
            "r-1", "pump", 2, 1, Selector(tags=("site-a",)), (Stage(share=1.0, bake_s=3600),)
        )
        started = hub.start_rollout(spec.to_json())
        assert started.id == "r-1" and started.active and started.selector_tags == ("site-a",)
        assert started.stages[0].label == "100%"
        with pytest.raises(HubError) as err:  # a draft is checked by the hub like any spec
            hub.start_rollout(RolloutDraft("r-2", "pump", 2, stages=(0.5, 0.2)))
        assert err.value.status == 422 and "shares must not decrease" in err.value.message
        assert hub.rollout("r-1").stage_devices == ()  # only when asked for
        (stage,) = hub.rollout("r-1", devices=True).stage_devices
        assert (stage.stage, stage.devices, stage.reached, stage.offline) == (0, 3, True, 1)
        assert sum(stage.statuses.values()) == 3
        paused = hub.rollout_command("r-1", "pause")
        assert paused.state == "paused" and paused.history[-1].to_state == "paused"
        with pytest.raises(HubError) as err:
            hub.rollout_command("r-1", "pause")
        assert err.value.status == 409 and "cannot pause while paused" in err.value.message
        assert [r.id for r in hub.rollouts(active=True)] == ["r-1"]
        assert hub.rollout_command("r-1", "abort").state == "aborted"
        assert hub.rollouts(active=True) == ()


def test_unreachable_hub_is_status_zero_in_one_line():
    hub = HubClient(f"http://127.0.0.1:{free_port()}", "efb_x")
    with hub, pytest.raises(HubError) as err:
        hub.devices()
    assert err.value.unreachable and "unreachable" in err.value.message
    assert "\n" not in str(err.value)


def test_a_malformed_answer_names_the_field():
    """A hub (or something in between) answering the wrong shape is a HubError, not a
    KeyError deep in a view."""
    body = {"devices": [{"id": "d", "tags": "not-a-list"}], "next": None}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    with HubClient("http://hub", "t", transport=transport) as hub, pytest.raises(HubError) as err:
        hub.devices()
    assert err.value.status == 200 and "devices[0].tags: expected a list" in err.value.message


def test_a_non_json_error_page_becomes_one_line():
    """A proxy's HTML error page is reduced to one line, never dumped."""
    page = "<html>\n<body>502 Bad Gateway</body>\n</html>"
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text=page))
    with HubClient("http://hub", "t", transport=transport) as hub, pytest.raises(HubError) as err:
        hub.whoami()
    assert err.value.status == 502 and err.value.message == "<html>"


def test_tls_hub_needs_its_ca(tmp_path, demo_dir, reference_x):
    tls = make_tls(tmp_path / "tls")
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(
        tmp_path / "hub", model, reference_x, tls_cert_file=tls.cert, tls_key_file=tls.key
    ) as f:
        assert f.url.startswith("https://")
        with HubClient(f.url, f.tokens["read"], ca_file=tls.ca) as hub:
            assert hub.whoami().name == "read-token"
        with HubClient(f.url, f.tokens["read"]) as untrusted, pytest.raises(HubError) as err:
            untrusted.whoami()
        assert err.value.unreachable and "--hub-ca" in err.value.message


def record(fleet, device: str, kind: EventKind, ts: float) -> int:
    return fleet.service.store.record_event(WireEvent(device, ts, kind, "", ModelVersion("m", 1)))


def test_event_stream_resumes_after_a_dropped_connection(fleet):
    """The link is cut mid-stream: the client reconnects and resumes after the last id
    it received, so the next event arrives once, and nothing before it again."""
    last = fleet.service.store.events(limit=1000)[-1].id
    proxy = TcpProxy("127.0.0.1", int(fleet.url.rsplit(":", 1)[1]))
    statuses: list[bool] = []
    got: list[int] = []
    connected = threading.Event()

    def on_status(up: bool, error: HubError | None) -> None:
        statuses.append(up)
        if up:
            connected.set()

    try:
        with HubClient(proxy.url, fleet.tokens["read"]) as hub:
            stream = hub.stream_events(
                after_id=last, on_status=on_status, backoff=Backoff(initial_s=0.05, max_s=0.2)
            )
            first = record(fleet, "dev-s", EventKind.RECEIVED, 1.0)
            got.append(next(stream).id)
            assert got == [first]
            connected.clear()
            proxy.drop()
            second = record(fleet, "dev-s", EventKind.ACTIVATED, 2.0)
            got.append(next(stream).id)
            stream.close()
    finally:
        proxy.close()
    assert got == [first, second]
    assert statuses[0] is True and False in statuses and statuses[-1] is True
    assert proxy.accepted >= 2


def test_event_stream_refused_without_a_token_is_not_retried(fleet):
    with HubClient(fleet.url) as hub, pytest.raises(HubError) as err:
        next(hub.stream_events(sleep=lambda s: pytest.fail("a 401 was retried")))
    assert err.value.status == 401


def test_async_client_pages_and_streams(fleet):
    async def main() -> tuple[list[str], list[str]]:
        async with AsyncHubClient(fleet.url, fleet.tokens["read"]) as hub:
            ids = [d.id async for d in hub.iter_devices(page_size=4)]
            last = (await hub.events(limit=1000)).events[-1].id
            record(fleet, "dev-a", EventKind.FAILED, 3.0)
            kinds = [e.kind async for e in hub.stream_events(after_id=last, max_events=1)]
            return ids, kinds

    ids, kinds = asyncio.run(main())
    assert ids == [d[0] for d in DEVICES] and kinds == ["failed"]


def test_sse_parser_joins_data_lines_and_skips_comments():
    parser = SseParser()
    lines = [": keep-alive", "", "id: 7", "event: deployment", 'data: {"a":', "data: 1}", ""]
    out = [m for m in map(parser.feed, lines) if m is not None]
    assert len(out) == 1 and out[0].id == "7" and out[0].event == "deployment"
    assert json.loads(out[0].data) == {"a": 1}


def test_backoff_grows_to_its_ceiling_and_resets():
    b = Backoff(initial_s=1.0, max_s=8.0)
    delays = [b.next_delay() for _ in range(6)]
    assert all(0.5 <= d <= 8.0 for d in delays) and delays[-1] >= 4.0
    b.reset()
    assert b.next_delay() <= 1.0


def test_latest_events_are_the_newest_ones_without_reading_them_all(
    tmp_path, demo_dir, reference_x
):
    """/v1/fleet/events/latest finds the newest events by a binary search over ids: the
    answer is exactly the newest N (of a device, too), oldest first."""
    model = (demo_dir / "model-int8.tflite").read_bytes()
    with running_fleet(tmp_path / "hub", model, reference_x) as f, client(f, "read") as hub:
        assert [e.id for e in hub.latest_events(limit=3)] == [9, 10, 11]
        assert len(hub.latest_events(limit=100)) == 11
        ids = [record(f, f"dev-{i % 7}", EventKind.RECEIVED, float(i)) for i in range(2500)]
        assert [e.id for e in hub.latest_events(limit=100)] == ids[-100:]
        mine = [i for i, n in zip(ids, range(2500), strict=True) if n % 7 == 3]
        latest = hub.latest_events(limit=50, device="dev-3")
        assert [e.id for e in latest] == mine[-50:] and {e.device_id for e in latest} == {"dev-3"}
        assert hub.latest_events(limit=5, device="nobody") == ()


def test_push_upload_and_drift_rule(tmp_path, demo_dir, reference_x):
    """A pipeline's calls: push a .tflite (the hub builds and signs it), upload a bundle
    signed elsewhere, ask for drift with a rule; each refusal is the hub's one line."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hub.bundler import ReferenceData, build_bundle
    from hub.keys import load_private_key

    model = (demo_dir / "model-int8.tflite").read_bytes()
    ref = (demo_dir / "reference.npz").read_bytes()
    data = tmp_path / "hub"
    with running_fleet(data, model, reference_x) as f, client(f, "deploy") as hub:
        pushed = hub.push_model("valve", model, ref, lineage={"run": "ci-7"})
        assert (pushed.name, pushed.version, pushed.lineage) == ("valve", 1, {"run": "ci-7"})
        assert pushed.source["sha256"] == pushed.sha256 and "inputs" in pushed.source
        assert hub.push_model("valve", model, ref, version=5, lineage="{}").version == 5
        with pytest.raises(HubError) as err:  # below the latest: a downgrade, refused
            hub.push_model("valve", model, ref, version=2)
        assert err.value.status == 422 and "\n" not in err.value.message
        with pytest.raises(HubError) as err:
            hub.push_model("valve", model, ref, lineage="[1]")
        assert err.value.status == 422 and "lineage" in err.value.message

        reference = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        keys = [load_private_key(p).key for p in sorted((data / "keys").glob("key-*.pem"))]
        build_bundle(model, name="gauge", version=3, reference=reference, keys=keys,
                     out=tmp_path / "gauge.efb")  # fmt: skip
        uploaded = hub.upload_bundle((tmp_path / "gauge.efb").read_bytes())
        assert (uploaded.name, uploaded.version) == ("gauge", 3)
        stranger = [Ed25519PrivateKey.generate()]
        build_bundle(model, name="gauge", version=4, reference=reference, keys=stranger,
                     out=tmp_path / "stranger.efb")  # fmt: skip
        with pytest.raises(HubError) as err:
            hub.upload_bundle((tmp_path / "stranger.efb").read_bytes())
        assert err.value.status == 422 and "\n" not in err.value.message
        assert [v.version for v in hub.versions("gauge")] == [3]

        drift = hub.drift("pump", 2, alpha=0.05)
        assert drift.n == 0 and drift.decision is not None
        assert drift.decision.verdict == "insufficient" and drift.source["decision"]
        with pytest.raises(HubError) as err:
            hub.drift("pump", 2, alpha=1.5)
        assert err.value.status in (400, 422) and "alpha" in err.value.message
