"""Newest frame wins: a one-slot mailbox between the subscription callback and the inference thread;
and the camera's frame period, measured from the frames' arrivals."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; a new item replaces (drops) the one not yet taken.

    ``put`` never blocks on the consumer, so a slow network can never build a
    queue behind the camera: it always works on the newest frame.
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._closed = False
        self._ready = threading.Condition()
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; returns True when it replaced an item that was never taken."""
        with self._ready:
            replaced = self._item is not None
            self.dropped += replaced
            self._item = item
            self._ready.notify()
            return replaced

    def take(self, timeout_s: float) -> T | None:
        """The newest item, waiting up to ``timeout_s``; None on timeout or once closed."""
        with self._ready:
            if self._item is None and not self._closed:
                self._ready.wait(timeout_s)
            item, self._item = self._item, None
            return item

    def serve(self, process: Callable[[T], None], skipped: Callable[[str, str], None]) -> None:
        """Run ``process`` on the newest item until the slot closes. An item it raises on is reported to
        ``skipped(kind, message)`` (``kind``: the exception's own, e.g. a ``FrameError``'s, else "internal")
        and the loop goes on: one bad frame must never stop the node."""
        while not self._closed:
            item = self.take(timeout_s=0.2)
            if item is None:
                continue
            try:
                process(item)
            except Exception as exc:
                kind = getattr(exc, "kind", None)
                if isinstance(kind, str):
                    skipped(kind, str(exc))
                else:
                    skipped("internal", f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class FramePeriod:
    """The camera's frame period: the median interval between the last ``window`` frames' arrivals.

    Arrival times, not header stamps: a replay or a driver that stamps frames at exposure still
    delivers them at the rate the CPU has to keep up with. The median ignores a lost frame (one
    double interval) and scheduling jitter.
    """

    def __init__(self, window: int = 31) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 arrivals, got {window}")
        self._arrivals: deque[float] = deque(maxlen=window)

    def add(self, arrived_s: float) -> None:
        """Record one frame's arrival (a monotonic time in seconds)."""
        self._arrivals.append(arrived_s)

    def period_ms(self) -> float:
        """The median interval [ms]; NaN before two arrivals."""
        if len(self._arrivals) < 2:
            return math.nan
        return 1e3 * float(np.median(np.diff(np.asarray(self._arrivals))))
