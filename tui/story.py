"""The demo's story line: ``edgefleet demo`` names a file in ``EDGEFLEET_DEMO_STORY``
holding one line ("demo 2/5 · v2 canary rolling out · next: ..."); the console shows
it at the bottom of every view, read once a second. Without the variable nothing
changes. In the demo, Ctrl+C quits the console too (it stops the whole demo).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.markup import escape
from textual.app import App
from textual.screen import ModalScreen
from textual.widgets import Static

STORY_ENV = "EDGEFLEET_DEMO_STORY"


class StoryLine(Static):
    """The story's status line: the last line of a view's body, above its footer."""

    DEFAULT_CSS = """
    StoryLine {
        height: 1;
        padding: 0 1;
        background: $accent 40%;
        color: $text;
    }
    """


def read_story(path: Path) -> str:
    """The file's first line, or a short note when it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "demo: waiting for the story…"
    return text.splitlines()[0] if text.strip() else "demo: waiting for the story…"


def follow_story(app: App[Any], env: Mapping[str, str] | None = None) -> None:
    """Show the story line on ``app``'s views when the demo started the console."""
    name = (os.environ if env is None else env).get(STORY_ENV)
    if not name:
        return
    path = Path(name)
    # A priority binding: the screen's own Ctrl+C (copy) would otherwise take the key.
    # App.bind() has no priority argument; its BindingsMap does (Textual 8).
    app._bindings.bind("ctrl+c", "quit", "Quit", show=False, priority=True)

    def refresh() -> None:
        screen = app.screen
        if isinstance(screen, ModalScreen):
            return
        found = screen.query(StoryLine)
        line = found.first() if found else StoryLine()
        if not found:
            screen.mount(line)
        line.update(escape(read_story(path)))

    app.set_interval(1.0, refresh)
    app.call_later(refresh)
