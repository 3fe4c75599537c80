"""The demo's story line in the console: shown on every view, following its file."""

from __future__ import annotations

import pytest

from tests.tui.conftest import console, until
from tui.story import STORY_ENV, StoryLine, read_story

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def story_text(app) -> str:
    found = app.screen.query(StoryLine)
    return str(found.first().render()) if found else ""


async def test_story_line_follows_the_demo_file_on_every_view(fleet, tmp_path, monkeypatch):
    story = tmp_path / "story.txt"
    story.write_text("demo 1/5 · healthy fleet on v1 · next: line-3's sensors drift in 42 s\n")
    monkeypatch.setenv(STORY_ENV, str(story))
    app = console(fleet)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: "drift in 42 s" in story_text(app), "the first story line")
        story.write_text("demo 2/5 · v2 canary rolling out · next: a broken v3\n")
        await until(pilot, lambda: "v2 canary" in story_text(app), "the story line to change")
        await pilot.press("3")  # another view gets the line too
        await until(pilot, lambda: "v2 canary" in story_text(app), "the line on Rollouts")
        await pilot.press("ctrl+c")  # under the demo, Ctrl+C quits the console
        await until(pilot, lambda: not app.is_running, "the console to quit on Ctrl+C")


async def test_console_without_the_demo_has_no_story_line(fleet, monkeypatch):
    monkeypatch.delenv(STORY_ENV, raising=False)
    app = console(fleet)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.screen.query("DataTable"), "the Pulse view")
        await pilot.pause(1.2)  # longer than the story line's refresh
        assert not app.screen.query(StoryLine)


def test_unreadable_story_file_says_so(tmp_path):
    assert read_story(tmp_path / "missing") == "demo: waiting for the story…"
    (tmp_path / "s").write_text("one\ntwo\n")
    assert read_story(tmp_path / "s") == "one"
