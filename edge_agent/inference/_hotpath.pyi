"""Type stub for the native hot path (``_hotpath.c``); see ``hotpath.py`` beside it."""

from typing import Any

class Runner:
    """One monitored prediction per call; built by ``hotpath.native_runner``."""

    def __init__(self, **arrays: Any) -> None: ...
    def __call__(self, inputs: object, probation: object = None, /) -> Any: ...
    def drain(self) -> None: ...
