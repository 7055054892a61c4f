"""selector: chooses the variant the elastic-inference node runs.

Subscriptions
  ~/profiles     adascale_msgs/VariantProfileArray from the profiler (current and forecast load)
Publications
  ~/selection    adascale_msgs/VariantSelection, reliable + transient local (depth 1), on change and
                 again every ``republish_period_s`` (the inference node's sign that the selector lives)
  /diagnostics   diagnostic_msgs/DiagnosticArray at 1 Hz

The decision loop lives in ``adascale_ros.selection``; this node converts
messages, keeps parameters valid and publishes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from statistics import median
from typing import Any

from adascale_msgs.msg import VariantProfileArray, VariantSelection
from adascale_ros.model.directory import cheapest_variant, load_variant_table
from adascale_ros.nodes.common import AdascaleNode, latched_qos, nice_parameter, spin_node
from adascale_ros.nodes.diagnostics import OK, WARN
from adascale_ros.nodes.messages import selection_message
from adascale_ros.nodes.parameters import Param
from adascale_ros.selection.selector import Profile, Selection, SelectorConfig, VariantSelector
from adascale_ros.selection.tables import VariantTables

PARAMETERS: dict[str, Param] = {
    "model_dir": Param("", "Model directory with variants.json; empty: the embedded default model.", read_only=True),
    "objective": Param("max_accuracy", "max_accuracy (best accuracy within budgets) or min_cost (eq. 7: min J)."),
    "latency_budget_ms": Param(0.0, "Latency budget T [ms]; 0: budget_fraction_of_frame_period decides.", low=0.0),
    "budget_fraction_of_frame_period": Param(
        0.5,
        "With latency_budget_ms 0: the budget is this fraction of the camera's measured frame period;"
        " 0: no latency budget.",
        low=0.0,
        high=1.0,
    ),
    "energy_budget_mj": Param(0.0, "Energy budget E_b per inference [mJ]; 0: none.", low=0.0),
    "min_accuracy": Param(0.0, "Minimum validation accuracy Acc_min.", low=0.0, high=1.0),
    "alpha": Param(1.0, "Weight of latency in J = alpha*L + beta*E [1/ms].", low=0.0),
    "beta": Param(0.0, "Weight of energy in J [1/mJ].", low=0.0),
    "dwell_s": Param(1.5, "An upgrade must stay available this long before it is taken [s].", low=0.0),
    "max_dwell_s": Param(
        8.0,
        "The dwell doubles, up to this, each time the load reverses an upgrade within the dwell it waited;"
        " an upgrade that lasts brings it back to dwell_s; dwell_s: no back-off [s].",
        low=0.0,
    ),
    "margin": Param(0.005, "An upgrade must beat the running variant's score by this much.", low=0.0),
    "latency_headroom": Param(
        0.05, "A new choice must be predicted within (1 - this) x the latency budget, in [0, 1); kept up to it."
    ),
    "use_forecast": Param(True, "Act on the forecast-load profile when it predicts a higher load than the current."),
    "profile_timeout_s": Param(
        2.0, "Profiles older than this are stale (kept, flagged in diagnostics) [s], above 0.", low=0.0
    ),
    "safe_default_variant": Param(
        "", "Variant published before any profile; empty: the cheapest variant that classifies."
    ),
    "republish_period_s": Param(
        1.0,
        "The selection in force is published again this often [s]; 0: only on change.",
        read_only=True,
        low=0.0,
        high=3600.0,
    ),
    "nice": nice_parameter(),
}


class SelectorNode(AdascaleNode):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("selector", PARAMETERS, **kwargs)
        values = self.settings
        config = SelectorConfig.from_values(values)
        republish_s = float(values["republish_period_s"])
        model_dir = self.model_dir()
        table = load_variant_table(model_dir)
        tables = VariantTables.from_variant_table(table)
        safe_default = values["safe_default_variant"] or cheapest_variant(table)
        self.core = VariantSelector(tables, config, safe_default)
        self.profiles_received = 0
        self.profiles_rejected = 0
        self.unknown_ids = 0
        self.invalid_predictions = 0
        self.selections_published = 0
        self._decision_us: deque[float] = deque(maxlen=200)
        self._logged: Selection | None = None
        self._pub = self.create_publisher(VariantSelection, "~/selection", latched_qos())
        self._sub = self.create_subscription(VariantProfileArray, "~/profiles", self._on_profiles, 10)
        self.serve()
        self._publish(self.core.in_force)
        if republish_s > 0.0:
            self._republish_timer = self.create_timer(republish_s, lambda: self._publish(self.core.in_force))
        self.get_logger().info(
            f"{len(tables)} variants from {model_dir}; safe default {safe_default}; "
            f"listening on {self._sub.topic_name}, publishing {self._pub.topic_name}"
        )

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def apply(self, values: dict[str, Any]) -> None:
        config = SelectorConfig.from_values(values)  # raises with the reason when invalid
        selection = self.core.reconfigure(config, self._now_s())
        if selection is not None:
            self._publish(selection)

    def _on_profiles(self, msg: VariantProfileArray) -> None:
        self.profiles_received += 1
        ids = msg.variant_ids
        columns = (msg.predicted_latency_ms, msg.predicted_energy_mj, msg.measured_latency_ms)
        if not ids or any(len(column) != len(ids) for column in columns):
            self.profiles_rejected += 1
            self.get_logger().warning(
                f"rejected a VariantProfileArray of {len(ids)} variant ids with "
                f"{', '.join(str(len(c)) for c in columns)} predicted latencies, energies and measured "
                "latencies: the columns must be one per variant, and not empty",
                throttle_duration_sec=5.0,
            )
            return
        predictions = dict(zip(ids, zip(msg.predicted_latency_ms, msg.predicted_energy_mj, strict=True), strict=True))
        unknown = sum(1 for v in predictions if v not in self.core.tables)
        if unknown:
            self.unknown_ids += unknown
            self.get_logger().warning(
                f"{unknown} of {len(predictions)} profiled variants are not in this model's table; ignored",
                throttle_duration_sec=5.0,
            )
        invalid = sum(1 for latency, _ in predictions.values() if not (math.isfinite(latency) and latency >= 0.0))
        if invalid:  # such a variant leaves the latency index until a valid prediction comes
            self.invalid_predictions += invalid
            self.get_logger().warning(
                f"{invalid} latency predictions are NaN, infinite or negative", throttle_duration_sec=5.0
            )
        measured = dict(zip(ids, msg.measured_latency_ms, strict=True))
        profile = Profile(self._now_s(), float(msg.load_index), predictions, measured, float(msg.frame_period_ms))
        start = time.perf_counter()
        selection = self.core.on_profile(profile, bool(msg.load_is_forecast))
        self._decision_us.append((time.perf_counter() - start) * 1e6)
        if selection is not None:
            self._publish(selection)

    def _publish(self, selection: Selection) -> None:
        msg = selection_message(selection, VariantSelection())
        msg.header.stamp = self.get_clock().now().to_msg()
        self._pub.publish(msg)
        self.selections_published += 1
        if selection is not self._logged:
            self._logged = selection
            self.get_logger().info(f"selected {msg.variant_id}: {msg.reason}")

    def diagnostic_status(self) -> tuple[bytes, str, dict[str, Any]]:
        now = self._now_s()
        selection = self.core.in_force
        latest = self.core.last_profile_s()
        if self.core.stale(now):
            level, message = WARN, f"profiles stale ({now - latest:.1f} s old): keeping the last table"
        elif self.profiles_received == 0:
            level, message = WARN, "no profile yet: safe default in force"
        else:
            level, message = OK, f"running {selection.choice.variant_id}"
        values = {
            "variant": selection.choice.variant_id,
            "feasible": selection.choice.feasible,
            "reason": selection.choice.reason,
            "load_index": selection.load_index,
            "load_is_forecast": selection.load_is_forecast,
            "latency_budget_ms": selection.budgets.latency_ms,
            "budget_source": selection.budget_source,
            "dwell_in_force_s": self.core.stable.dwell_in_force_s,
            "profiles_received": self.profiles_received,
            "profiles_rejected": self.profiles_rejected,
            "unknown_variant_ids": self.unknown_ids,
            "invalid_predictions": self.invalid_predictions,
            "selections_published": self.selections_published,
            "last_profile_age_s": now - latest,
            "decision_time_us_median": median(self._decision_us) if self._decision_us else math.nan,
        }
        return level, message, values


def main(args: list[str] | None = None, stop: threading.Event | None = None) -> int:
    return spin_node(SelectorNode, args, stop)


if __name__ == "__main__":
    raise SystemExit(main())
