"""EdgeFleet operator console (Textual): ``edgefleet console``.

Talks to the hub only through :mod:`edgefleet_client` (never imports ``hub`` or
``edge_agent``). Views: Pulse, Fleet, Device, Rollouts (list and detail), Events.
"""
