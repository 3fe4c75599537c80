"""Type stub for the native hot path (edge_agent/_hotpath.c); see edge_agent/hotpath.py."""

from typing import Any

class Runner:
    """One monitored prediction per call; built by ``edge_agent.hotpath.native_runner``."""

    def __init__(self, **arrays: Any) -> None: ...
    def __call__(self, inputs: object, probation: object = None, /) -> Any: ...
    def drain(self) -> None: ...
