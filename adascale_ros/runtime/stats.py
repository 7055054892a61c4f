"""What the inference node counts, from its two threads, and the status it reports from the counts."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from adascale_ros.runtime.frames import FramePeriod

# Status levels, as diagnostic_msgs numbers them.
OK, WARN, ERROR = 0, 1, 2
NO_FRAME_WARN_S = 3.0  # a camera at 1 Hz or faster is never this quiet

COUNTS = (
    "received",
    "processed",
    "early_exits",
    "deadline_exits",
    "selections_received",
    "rejected_selections",
    "selection_timeouts",
)


@dataclass(frozen=True)
class Situation:
    """What the status depends on besides the counts."""

    variant: str
    camera_topic: str
    selection_in_force: bool
    dropped: int  # frames replaced in the newest-frame slot before the inference thread took them


class InferenceStats:
    """Thread-safe counts of frames, selections, results and skipped frames, the recent latencies and
    the camera's frame period; ``status`` turns them into one diagnostic status per call."""

    def __init__(self, now_s: float, latency_window: int = 200) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(COUNTS, 0)
        self.errors: dict[str, int] = {}
        self._latencies_ms: deque[float] = deque(maxlen=latency_window)
        self._frame_period = FramePeriod()
        self.last_frame_s = now_s  # start-up counts as a frame: the camera gets a grace period
        self._rates_at = (now_s, 0, 0)
        self._errors_reported = 0
        self._internal_reported = 0

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def frame_received(self, now_s: float) -> None:
        with self._lock:
            self.counts["received"] += 1
            self._frame_period.add(now_s)
            self.last_frame_s = now_s

    def frame_processed(self, latency_ms: float, early_exited: bool, deadline_exited: bool) -> None:
        with self._lock:
            self.counts["processed"] += 1
            self.counts["early_exits"] += early_exited
            self.counts["deadline_exits"] += deadline_exited
            self._latencies_ms.append(latency_ms)

    def frame_skipped(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def frame_period_ms(self) -> float:
        with self._lock:
            return self._frame_period.period_ms()

    def status(self, now_s: float, situation: Situation) -> tuple[int, str, dict[str, Any]]:
        """(level, message, values) since the previous call: ERROR while the model fails on every frame;
        WARN with no camera frame for ``NO_FRAME_WARN_S``, frames skipped, or no selection in force."""
        with self._lock:
            counts, errors = dict(self.counts), dict(self.errors)
            latencies = np.array(self._latencies_ms) if self._latencies_ms else None
            period_ms = self._frame_period.period_ms()
            silent_s = now_s - self.last_frame_s
        counts["dropped"] = situation.dropped
        then, received_then, processed_then = self._rates_at
        self._rates_at = (now_s, counts["received"], counts["processed"])
        total_errors, internal = sum(errors.values()), errors.get("internal", 0)
        new_errors, new_internal = total_errors - self._errors_reported, internal - self._internal_reported
        self._errors_reported, self._internal_reported = total_errors, internal
        if new_internal and counts["processed"] == processed_then:
            level, message = ERROR, f"the model fails on every frame ({new_internal} since the last status)"
        elif silent_s >= NO_FRAME_WARN_S:
            level, message = WARN, f"no camera frame on {situation.camera_topic} for {silent_s:.0f} s"
        elif new_errors:
            level, message = WARN, f"{new_errors} frames skipped: " + ", ".join(f"{k} {v}" for k, v in errors.items())
        elif not situation.selection_in_force:
            reason = "selection timed out" if counts["selection_timeouts"] else "no selection yet"
            level, message = WARN, f"{reason}: running the safe default {situation.variant}"
        else:
            level, message = OK, f"running {situation.variant}"
        elapsed = now_s - then
        values: dict[str, Any] = {
            "input_rate_hz": (counts["received"] - received_then) / elapsed if elapsed > 0 else math.nan,
            "frame_period_ms": period_ms,
            "processed_rate_hz": (counts["processed"] - processed_then) / elapsed if elapsed > 0 else math.nan,
            "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies is not None else math.nan,
            "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies is not None else math.nan,
            **{f"frames_{k}" if k in ("received", "processed", "dropped") else k: v for k, v in counts.items()},
            "frames_skipped": total_errors,
            **{f"skipped.{kind}": n for kind, n in errors.items()},
        }
        return level, message, values
