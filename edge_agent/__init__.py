"""EdgeFleet edge agent: the device side, and the wire contract the hub imports.

A device installs only ``edgefleet[agent]``; nothing in this package imports ``hub``
or ``tui``.
"""

__version__ = "0.1.0"
