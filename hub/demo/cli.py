"""``edgefleet demo``: options, refusals in one line, the exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hub.demo.brokers import find_mosquitto


@click.command("demo")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the hub, fleet and models in this directory between runs "
    "(default: a fresh temporary directory, removed at the end).",
)
@click.option("--agents", type=click.IntRange(3, 200), default=12, show_default=True,
              help="Simulated devices (real agents, several per process).")  # fmt: skip
@click.option("--motors", type=click.IntRange(0, 50), default=2, show_default=True,
              help="Devices running the second model, the vibration CNN on accelerometer "
              "windows (0: none); the last one has a loose sensor mount.")  # fmt: skip
@click.option(
    "--broker",
    type=click.Choice(["embedded", "mosquitto"]),
    default="embedded",
    show_default=True,
    help="The MQTT broker on loopback: the hub's embedded one, or Mosquitto "
    "(where /usr/sbin/mosquitto is installed).",
)
@click.option("--headless", is_flag=True,
              help="No console: play the story, print a summary, exit 0 only if every "
              "outcome happened (the default without a terminal).")  # fmt: skip
@click.option("--duration", type=click.FloatRange(10, 86400), default=None,
              help="Headless: run at least this many seconds (the story is paced to fit; "
              "default 300).")  # fmt: skip
@click.option("--rate", type=click.FloatRange(0.5, 100), default=5.0, show_default=True,
              help="Sensor readings per second per device.")  # fmt: skip
def demo(
    data: Path | None,
    agents: int,
    motors: int,
    broker: str,
    headless: bool,
    duration: float | None,
    rate: float,
) -> None:
    """A live fleet with a story, in the operator console (what `make demo` runs).

    The hub, an MQTT broker and simulated devices on loopback; v1 is deployed, then a
    cohort drifts, a v2 canary completes, a broken v3 is rolled back automatically and
    a device goes offline and catches up. Beside the pumps, motors run a vibration CNN.
    Ctrl-C or quitting the console stops it all.
    """
    from hub.demo.run import DemoOptions, run_demo
    from hub.demo.workdir import DemoDirError
    from hub.errors import HubError

    if broker == "mosquitto" and find_mosquitto() is None:
        raise click.ClickException("--broker mosquitto: mosquitto is not installed")
    if duration is not None and not headless and sys.stdin.isatty():
        raise click.UsageError("--duration needs --headless")
    options = DemoOptions(
        data=data,
        agents=agents,
        motors=motors,
        broker="mosquitto" if broker == "mosquitto" else "embedded",
        headless=headless or not (sys.stdin.isatty() and sys.stdout.isatty()),
        duration_s=duration,
        rate_hz=rate,
    )
    try:
        code = run_demo(options, sys.stdout, sys.stderr)
    except (DemoDirError, HubError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)
