"""``:name`` command mode and the command palette: view names and their aliases."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewName:
    """A view the operator can open by name."""

    name: str
    aliases: tuple[str, ...]
    key: str
    help: str


VIEWS: tuple[ViewName, ...] = (
    ViewName("pulse", ("p", "home", "overview"), "1", "Fleet overview: online, versions, rollouts"),
    ViewName("fleet", ("f", "devices", "dev", "dp"), "2", "Devices: filter, sort, open one"),
    ViewName("rollouts", ("ro", "r", "rollout"), "3", "Rollouts with state and progress"),
    ViewName("events", ("ev", "e", "log"), "4", "Live event tail from the hub"),
    ViewName("models", ("m", "mo", "versions"), "5", "Model versions and where they run"),
    ViewName("audit", ("au", "a"), "6", "The hash-chained audit log (admin)"),
    ViewName("alerts", ("al", "alert"), "7", "Alert rules firing and resolving"),
)


@dataclass(frozen=True)
class Command:
    """A parsed ``:`` command: a view, optionally with an argument (``:device pump-01``)."""

    view: str
    arg: str = ""


class CommandError(ValueError):
    """An unknown command (one line listing the known ones)."""


def parse_command(text: str) -> Command:
    """``fleet`` / ``f`` / ``alerts`` / ``device pump-01`` / ``rollout r-1`` / ``quit``.

    Raises:
        CommandError: unknown name, or a ``device``/``rollout`` without an id.
    """
    words = text.strip().removeprefix(":").split()
    if not words:
        raise CommandError("type a view name: " + ", ".join(v.name for v in VIEWS))
    name, arg = words[0].lower(), " ".join(words[1:])
    if name in ("q", "quit", "exit"):
        return Command("quit")
    if name in ("device", "d", "dev") and arg:
        return Command("device", arg)
    if name in ("rollout", "ro", "r") and arg:
        return Command("rollout", arg)
    if name == "drift" and arg:
        return Command("drift", arg)
    for v in VIEWS:
        if name == v.name or name in v.aliases:
            return Command(v.name)
    known = ", ".join(v.name for v in VIEWS)
    raise CommandError(
        f"unknown command {name!r}: {known}, device <id>, rollout <id>, drift <model:vN>, quit"
    )
