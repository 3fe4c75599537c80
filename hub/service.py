"""``edgefleet hub serve``: the broker (embedded unless one is given), store, ingest and API.

Everything lives under one data directory (mode 0700)::

    hub.db      store, API tokens (hashed), audit log, registry
    bundles/    content-addressed signed bundles
    keys/       the hub's signing keys and trust.json (created on first start)
    rotations.json  the trust rotations adopted (``edgefleet hub keys adopt-rotation``),
                published retained on ``edgefleet/v1/trust`` at every start
    url-secret  signs short-lived bundle download URLs for devices
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.contract.trust import RotationChain, TrustRoot
from edge_agent.daemon.config import BrokerConfig
from edge_agent.durable import write_atomic
from edge_agent.errors import ValidationError
from hub.alerts import BUILTIN_RULES, Alerter, AlertRule, load_rules
from hub.api import ApiServer, HubContext, create_app
from hub.audit import AuditLog
from hub.broker import EmbeddedBroker
from hub.dispatch import DirectivePublisher, DirectiveSigner
from hub.errors import HubError
from hub.ingest import Ingest
from hub.keys import ROTATIONS_FILE, check_chain, init_keys, load_private_key
from hub.mqtt_relay import tune_gc_for_ingest
from hub.plausibility import DEFAULT_MAX_RATE_PER_S, Limits
from hub.refusals import RefusalLog
from hub.registry import Registry
from hub.restamps import RestampLog
from hub.rollouts import RolloutStore
from hub.rollouts.runner import RolloutRunner
from hub.store import Store
from hub.tokens import TokenStore

log = logging.getLogger("edgefleet.hub")


@dataclass(frozen=True)
class HubSettings:
    """Where the hub keeps its data and where it listens."""

    data_dir: Path
    api_host: str = "127.0.0.1"
    api_port: int = 8700
    broker_url: str | None = None  # None: run the embedded broker
    embedded_broker_port: int = 1883
    broker_username: str | None = None
    broker_password: str | None = None
    alert_rules: Path | None = None  # JSON rules (see hub.alerts), besides the built-in ones
    webhook_url: str | None = None  # called on every alert transition
    alert_interval_s: float = 30.0
    public_url: str | None = None  # the API as devices reach it; default: where it listens
    broker_ca_file: Path | None = None  # for an mqtts:// broker; None: the system's CAs
    tls_cert_file: Path | None = None  # serve the API over HTTPS with this certificate...
    tls_key_file: Path | None = None  # ...and its key
    rollout_interval_s: float = 1.0
    rollup_interval_s: float = 30.0  # how often changed hour buckets are rolled up
    revocation_interval_s: float = 2.0  # how often revoked devices' directives are cleared
    max_prediction_rate: float = DEFAULT_MAX_RATE_PER_S  # per device; more is refused


class HubService:
    """The running hub. Use :meth:`start` / :meth:`stop`, or as a context manager."""

    def __init__(self, settings: HubSettings) -> None:
        """Prepare (nothing listens before :meth:`start`)."""
        self.settings = settings
        self.broker: EmbeddedBroker | None = None
        self.store: Store | None = None
        self.tokens: TokenStore | None = None
        self.audit: AuditLog | None = None
        self.ingest: Ingest | None = None
        self.registry: Registry | None = None
        self.alerter: Alerter | None = None
        self.signer: DirectiveSigner | None = None
        self.rollouts: RolloutStore | None = None
        self.runner: RolloutRunner | None = None
        self.publisher: DirectivePublisher | None = None
        self.api: ApiServer | None = None
        self.context: HubContext | None = None  # what the API serves from
        self._roller: threading.Thread | None = None
        self._revoker: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> HubService:
        """Open the store, start the broker (if embedded), ingest and the API.

        Raises:
            HubError: a part did not start (port in use, broker unreachable, bad URL).
        """
        s = self.settings
        rules = load_rules(s.alert_rules.read_bytes()) if s.alert_rules is not None else None
        reserved = {r.name for r in BUILTIN_RULES} & {r.name for r in rules or ()}
        if reserved:
            raise HubError(f"alert rules: {', '.join(sorted(reserved))} is a built-in rule's name")
        try:
            return self._start(s, rules)
        except BaseException:
            self.stop()  # nothing half-started keeps running (ports, threads)
            raise

    def _start(self, s: HubSettings, rules: tuple[AlertRule, ...] | None) -> HubService:
        s.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = s.data_dir / "hub.db"
        self.tokens = TokenStore(db)  # creates hub.db with mode 0600
        self.store = Store(db)
        self.audit = AuditLog(db)
        key_dir = s.data_dir / "keys"
        chain = RotationChain.load(s.data_dir / ROTATIONS_FILE)
        if not (key_dir / "trust.json").exists():
            if chain.records:  # never replace rotated keys with fresh ones
                raise HubError(
                    f"{key_dir / 'trust.json'} is missing but {ROTATIONS_FILE} holds rotations: "
                    "finish `edgefleet hub keys adopt-rotation`"
                )
            init_keys(key_dir)
            log.info(
                "hub: created signing keys in %s (pin %s on devices)",
                key_dir,
                key_dir / "trust.json",
            )
        trust = TrustRoot.load(key_dir / "trust.json")
        check_chain(chain, trust)
        keys = [load_private_key(p).key for p in sorted(key_dir.glob("key-*.pem"))]
        self.registry = Registry(db, s.data_dir / "bundles", trust, keys)
        secret_path = s.data_dir / "url-secret"
        if not secret_path.exists():
            write_atomic(secret_path, secrets.token_bytes(32), 0o600)
        url_secret = secret_path.read_bytes()
        if s.broker_url is None:
            self.broker = EmbeddedBroker("127.0.0.1", s.embedded_broker_port).start()
            host, port, tls = self.broker.host, self.broker.port, False
        else:
            try:
                broker = BrokerConfig.from_url(s.broker_url)
            except ValidationError as exc:
                raise HubError(str(exc)) from exc
            host, port, tls = broker.host, broker.port, broker.tls
        user, password, ca = s.broker_username, s.broker_password, s.broker_ca_file
        registry = self.registry
        tune_gc_for_ingest()
        self.ingest = Ingest(
            self.store,
            host,
            port,
            user,
            password,
            tls=tls,
            ca_file=ca,
            known_version=lambda name, version: registry.get(name, version) is not None,
            limits=Limits(max_rate_per_s=s.max_prediction_rate),
            on_refused=RefusalLog(self.audit).record,
            on_restamped=RestampLog(self.audit).record,
        ).start()
        self.signer = DirectiveSigner(db, keys)
        self.publisher = DirectivePublisher(host, port, user, password, tls=tls, ca_file=ca).start()
        if chain.records:  # before anything is signed with the new keys
            self.publisher.publish_trust(chain)
            log.info("hub: published trust rotations up to version %d", trust.version)
        context = HubContext(
            tokens=self.tokens,
            store=self.store,
            audit=self.audit,
            counters=self.ingest.counters,
            implausible=self.ingest.implausible,
            clock_skewed=self.ingest.clock_skewed,
            registry=self.registry,
            url_secret=url_secret,
            signer=self.signer,
            publisher=self.publisher,
        )
        self.context = context
        self.api = ApiServer(
            create_app(context),
            s.api_host,
            s.api_port,
            tls_cert=s.tls_cert_file,
            tls_key=s.tls_key_file,
        ).start()
        context.public_url = s.public_url or self.api.url
        self.rollouts = RolloutStore(db)
        self.runner = RolloutRunner(
            self.store,
            self.registry,
            self.rollouts,
            context.deployer(),
            self.audit,
        )
        context.runner = self.runner
        self.runner.start_thread(s.rollout_interval_s)
        self.alerter = Alerter(
            self.store, self.registry.reference, (*BUILTIN_RULES, *(rules or ())), s.webhook_url
        )
        self.alerter.start(s.alert_interval_s)
        self._stopping.clear()
        self._roller = threading.Thread(
            target=self._roll_up_forever, args=(self.store, s.rollup_interval_s),
            name="hub-rollups", daemon=True,
        )  # fmt: skip
        self._roller.start()
        self._revoker = threading.Thread(
            target=self._clear_revoked_forever, args=(s.revocation_interval_s,),
            name="hub-revocations", daemon=True,
        )  # fmt: skip
        self._revoker.start()
        self.audit.append("hub", "hub.start", str(s.data_dir), {"api": self.api.url})
        log.info("hub: API on %s, MQTT on %s:%s", self.api.url, host, port)
        return self

    @property
    def broker_url(self) -> str:
        """Where devices and the hub meet."""
        if self.broker is not None:
            return self.broker.url
        return self.settings.broker_url or ""

    def _clear_revoked(self) -> None:
        """Remove the retained directives of devices revoked since the last look (the
        revocation is written by ``device revoke``, possibly in another process)."""
        store, publisher = self.store, self.publisher
        if store is None or publisher is None:
            return
        for device_id in store.revoked_with_directive():
            try:
                publisher.clear(device_id)
            except HubError as exc:
                log.warning("hub: %s; trying again", exc)
                return
            store.mark_directive_cleared(device_id, time.time())
            log.info("hub: %s is revoked: its retained directive is cleared", device_id)
            if self.audit is not None:
                self.audit.append("hub", "device.directive_cleared", device_id, {})

    def _clear_revoked_forever(self, interval_s: float) -> None:
        while True:
            try:
                self._clear_revoked()
            except HubError as exc:
                log.error("hub: clearing revoked devices' directives failed: %s", exc)
            if self._stopping.wait(interval_s):
                return

    def _roll_up_forever(self, store: Store, interval_s: float) -> None:
        """Keep the hourly roll-ups current, so drift queries only merge a few rows."""
        while not self._stopping.wait(interval_s):
            try:
                while store.roll_up() and not self._stopping.is_set():
                    pass
            except HubError as exc:
                log.error("hub: roll-up failed: %s", exc)

    def stop(self) -> None:
        """Stop the API, ingest and broker, and close the store."""
        self._stopping.set()
        if self._roller is not None:
            self._roller.join(30)
            self._roller = None
        if self._revoker is not None:
            self._revoker.join(30)
            self._revoker = None
        if self.runner is not None:
            self.runner.stop()
        if self.alerter is not None:
            self.alerter.stop()
            self.alerter.close()
        for part in (self.api, self.ingest, self.publisher):
            if part is not None:
                part.stop()
        if self.broker is not None:
            self.broker.stop()
        closables = (self.rollouts, self.signer, self.registry, self.audit, self.store, self.tokens)
        for closable in closables:
            if closable is not None:
                closable.close()

    def __enter__(self) -> HubService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
