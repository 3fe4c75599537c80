"""``edgefleet demo``: a live fleet with a story, opened in the console.

Rooms:

- :mod:`hub.demo.story`: the story's timeline, a pure state machine (observations in,
  actions and a "next: ..." status line out);
- :mod:`hub.demo.workdir`: the demo's data directory (its format marker, the lock that
  keeps a second demo off it);
- :mod:`hub.demo.models`: the model versions the story pushes (built with the model kit);
- :mod:`hub.demo.fleet`: worker processes running several real agents each, fed by the
  sensor generator;
- :mod:`hub.demo.netcut`: a loopback TCP relay the story cuts to take a device offline;
- :mod:`hub.demo.brokers`: the embedded broker or a Mosquitto process on loopback;
- :mod:`hub.demo.run`: wiring it together (hub, fleet, story, console or headless) and
  the summary;
- :mod:`hub.demo.cli`: the ``edgefleet demo`` command.
"""
