"""EdgeFleet operator console (Textual). Talks to the hub only through its HTTP API.

Not built yet: this package only reserves the name (see the README's status).
"""
