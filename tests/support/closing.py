"""Running workers in threads while another thread keeps closing monitoring windows."""

from __future__ import annotations

import threading
from collections.abc import Callable

from edge_agent.contract.window import MetricsWindow

#: Pause between two closes. A closer that never pauses holds the GIL and the window's
#: lock against the workers: on a busy 2-core machine the workers then crawl (30 s for
#: a test that takes 0.1 s idle). A close every millisecond still lands dozens of times
#: in the middle of the workers' recording, which is the race these tests are after.
PAUSE_S = 0.001


def close_while_running(
    close: Callable[[], MetricsWindow | None], workers: list[Callable[[], None]]
) -> tuple[list[MetricsWindow], int]:
    """Run ``workers`` in threads while one more thread calls ``close`` over and over
    (pausing on an event between closes); return every window closed, a last ``close``
    after the workers included, and how many of them were closed while workers ran."""
    windows: list[MetricsWindow] = []
    done = threading.Event()

    def closer() -> None:
        while not done.is_set():
            if (w := close()) is not None:
                windows.append(w)
            done.wait(PAUSE_S)  # returns at once when the workers are done

    closing = threading.Thread(target=closer)
    threads = [threading.Thread(target=work) for work in workers]
    closing.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    closing.join()
    during = len(windows)
    if (w := close()) is not None:
        windows.append(w)
    return windows, during
