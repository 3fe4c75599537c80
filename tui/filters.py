"""The ``/`` filter language of the Fleet and Events views (pure, tested alone).

Terms are separated by spaces; ``key:value`` terms filter a field, other terms match
text; a leading ``!`` inverts a term. Fleet keys: ``tag``, ``state`` (online, offline,
never), ``version`` (``2`` or ``pump:2``, active or shadow), ``model``, ``drift`` (the
hub's verdict: insufficient, none, minor, drift, major; a device without one, running
no model, matches no ``drift`` term, ``!drift:`` included, as on the hub). Events keys:
``device``, ``kind``, ``model``. Unknown keys are an error naming the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgefleet_client import Device, Event

FLEET_KEYS = ("tag", "state", "version", "model", "drift")
EVENT_KEYS = ("device", "kind", "model")
STATES = ("online", "offline", "never")
VERDICTS = ("insufficient", "none", "minor", "drift", "major")


class FilterError(ValueError):
    """A filter expression that cannot be applied (one line saying why)."""


@dataclass(frozen=True)
class Term:
    """One term: ``key`` is empty for free text."""

    key: str
    value: str
    negated: bool = False


def parse(text: str, keys: tuple[str, ...]) -> tuple[Term, ...]:
    """Split ``text`` into terms.

    Raises:
        FilterError: an unknown ``key:``, or an empty value.
    """
    terms: list[Term] = []
    for word in text.split():
        negated = word.startswith("!")
        word = word.removeprefix("!")
        key, sep, value = word.partition(":")
        if not sep:
            key, value = "", word
        elif key not in keys:
            raise FilterError(f"unknown filter {key!r}: use {', '.join(keys)} or plain text")
        if not value:
            raise FilterError(f"filter {word!r}: give a value after ':'")
        if key == "state" and value not in STATES:
            raise FilterError(f"state:{value}: use one of {', '.join(STATES)}")
        if key == "drift" and value.lower() not in VERDICTS:
            raise FilterError(f"drift:{value}: use one of {', '.join(VERDICTS)}")
        terms.append(Term(key, value.lower(), negated))
    return tuple(terms)


def device_state(d: Device) -> str:
    """online, offline, or never (never reported)."""
    if d.online:
        return "online"
    return "never" if d.last_seen is None else "offline"


def _version_matches(d: Device, value: str) -> bool:
    name, _, version = value.rpartition(":")
    for m in (d.active, d.shadow):
        if m is not None and str(m.version) == version and (not name or m.name.lower() == name):
            return True
    return False


def _device_term(d: Device, t: Term) -> bool:
    if t.key == "tag":
        return t.value in (tag.lower() for tag in d.tags)
    if t.key == "state":
        return device_state(d) == t.value
    if t.key == "version":
        return _version_matches(d, t.value)
    if t.key == "model":
        return any(m is not None and m.name.lower() == t.value for m in (d.active, d.shadow))
    if t.key == "drift":
        return d.drift == t.value
    haystack = " ".join((d.id, *d.tags)).lower()
    return t.value in haystack


def match_device(d: Device, terms: tuple[Term, ...]) -> bool:
    """Whether ``d`` passes every term (a ``drift`` term, negated or not, only when the
    device has a verdict)."""
    return all(
        _device_term(d, t) != t.negated and (t.key != "drift" or d.drift is not None) for t in terms
    )


def server_params(terms: tuple[Term, ...]) -> dict[str, object]:
    """What the hub's ``/v1/devices`` can filter itself (the first plain ``tag``,
    ``online`` for a ``state``, and every ``drift`` term as the verdicts left), so a
    page holds matching devices. The hub knows only connected or not: ``state:offline``
    and ``state:never`` both ask for the devices not connected, and the page is then
    told apart here (a device never seen is not offline)."""
    out: dict[str, object] = {}
    verdicts = set(VERDICTS)
    drift = False
    for t in terms:
        if t.key == "drift":
            drift = True
            verdicts = verdicts - {t.value} if t.negated else verdicts & {t.value}
    if drift:
        out["drift"] = [v for v in VERDICTS if v in verdicts]
    for t in terms:
        if t.negated:
            continue
        if t.key == "tag" and "tag" not in out:
            out["tag"] = t.value
        if t.key == "state" and "online" not in out:
            out["online"] = t.value == "online"
    return out


def _event_term(e: Event, t: Term) -> bool:
    if t.key == "device":
        return t.value in e.device_id.lower()
    if t.key == "kind":
        return e.kind.lower() == t.value
    if t.key == "model":
        return e.model is not None and t.value in e.model.label.lower()
    return t.value in f"{e.device_id} {e.kind} {e.detail}".lower()


def match_event(e: Event, terms: tuple[Term, ...]) -> bool:
    """Whether ``e`` passes every term."""
    return all(_event_term(e, t) != t.negated for t in terms)
