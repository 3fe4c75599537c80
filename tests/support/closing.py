"""Running workers in threads while another thread keeps closing monitoring windows."""

from __future__ import annotations

import threading
from collections.abc import Callable

from edge_agent.monitor import MetricsWindow


def close_while_running(
    close: Callable[[], MetricsWindow | None], workers: list[Callable[[], None]]
) -> list[MetricsWindow]:
    """Run ``workers`` in threads while one more thread calls ``close`` over and over;
    return every window closed, a last ``close`` after the workers included."""
    windows: list[MetricsWindow] = []
    done = threading.Event()

    def closer() -> None:
        while not done.is_set():
            if (w := close()) is not None:
                windows.append(w)

    closing = threading.Thread(target=closer)
    threads = [threading.Thread(target=work) for work in workers]
    closing.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    closing.join()
    if (w := close()) is not None:
        windows.append(w)
    return windows
