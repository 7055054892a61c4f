"""Node parameters declared from one table: descriptors with ranges and choices, validated as a whole."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Param:
    """A declared parameter: default value, description, whether it may change at runtime, and the
    inclusive range of its values (``low``/``high``; None: unbounded on that side), which
    ``ros2 param describe`` shows and rclpy enforces on every set. A node's own validation adds
    what a range cannot say (an open end, a relation between parameters). ``choices`` are checked by the
    node base at start-up and on every set, and listed in the descriptor's constraints."""

    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()  # a string parameter's allowed values; empty: any

    def bounds(self) -> str:
        """The range in words, e.g. "must be in [0, 1]"; the type when the parameter has no range."""
        if self.low is not None and self.high is not None:
            return f"must be in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"must be >= {self.low:g}"
        if self.high is not None:
            return f"must be <= {self.high:g}"
        return f"must be a {type(self.default).__name__}"

    def descriptor(self) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.choices:
            descriptor.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.low is None and self.high is None:
            return descriptor
        if isinstance(self.default, bool) or not isinstance(self.default, int | float):
            raise TypeError(f"a range needs a numeric parameter, not {type(self.default).__name__}")
        if isinstance(self.default, int):
            low = int(self.low) if self.low is not None else -INT64_MAX - 1
            high = int(self.high) if self.high is not None else INT64_MAX
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        else:
            low = float(self.low) if self.low is not None else -math.inf
            high = float(self.high) if self.high is not None else math.inf
            descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
        return descriptor


def declare_parameters(node: Node, params: Mapping[str, Param]) -> None:
    """Declare every parameter with its descriptor; ``ValueError`` naming the first whose given value is
    outside its range or of the wrong type."""
    for name, spec in params.items():
        try:
            node.declare_parameter(name, spec.default, spec.descriptor())
        except ParameterException as exc:
            raise ValueError(f"{name} {spec.bounds()}: {exc}") from None


def check_choices(params: Mapping[str, Param], values: Mapping[str, Any]) -> None:
    """``ValueError`` naming the first parameter whose value is not one of its choices."""
    for name, spec in params.items():
        if spec.choices and values[name] not in spec.choices:
            raise ValueError(f"{name} must be one of {', '.join(spec.choices)}, got {values[name]!r}")


def current_values(node: Node, names: Mapping[str, Any]) -> dict[str, Any]:
    return {name: node.get_parameter(name).value for name in names}


def validating_callback(
    node: Node, names: Mapping[str, Any], apply: Callable[[dict[str, Any]], None]
) -> Callable[[list[Parameter]], SetParametersResult]:
    """Build an on-set-parameters callback that validates the whole new configuration.

    ``apply`` receives every parameter value as it would be after the change;
    it raises ``ValueError`` (or ``TypeError``) to reject the change with that
    message as the reason, and otherwise puts the change into effect.
    """

    def callback(changed: list[Parameter]) -> SetParametersResult:
        values = current_values(node, names)
        values.update({p.name: p.value for p in changed if p.name in names})
        try:
            apply(values)
        except (ValueError, TypeError) as exc:
            node.get_logger().warning(f"rejected parameter change: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    return callback
