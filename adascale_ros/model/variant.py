"""A variant of the elastic network, by its id: no torch, so that nodes can parse ids cheaply."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VARIANT_ID = re.compile(r"^e(\d+):([a-z]+(?:-[a-z]+)*)(?:@(\d+))?$")


@dataclass(frozen=True, order=True)
class Variant:
    """An exit, the operator (branch) chosen at every stage up to it, and the input resolution.

    Its id reads ``e<exit>:<op>-<op>-...``, e.g. ``e2:dws-mbc-res`` exits
    after the third stage (exit index 2) having run dws, mbc, then res. A
    network with elastic input resolution adds ``@<side>``:
    ``e1:pre-merge@160`` runs on 160 x 160 pixels. Without it the variant runs
    at the model card's one input size.
    """

    exit_index: int
    operators: tuple[str, ...] = field(default=())
    resolution: int | None = None

    def __post_init__(self) -> None:
        if len(self.operators) != self.exit_index + 1:
            raise ValueError(f"exit {self.exit_index} needs {self.exit_index + 1} operators, got {self.operators}")
        if self.resolution is not None and self.resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {self.resolution}")

    @property
    def id(self) -> str:
        suffix = "" if self.resolution is None else f"@{self.resolution}"
        return f"e{self.exit_index}:{'-'.join(self.operators)}{suffix}"

    @classmethod
    def parse(cls, variant_id: str) -> Variant:
        match = _VARIANT_ID.match(variant_id)
        if not match:
            raise ValueError(f"malformed variant id {variant_id!r}; expected e<exit>:<op>-<op>...[@<side>]")
        resolution = int(match.group(3)) if match.group(3) is not None else None
        return cls(int(match.group(1)), tuple(match.group(2).split("-")), resolution)

    def prefix(self, exit_index: int) -> Variant:
        """The variant that stops at an earlier exit of this one's path (what a confidence early exit ran)."""
        if not 0 <= exit_index <= self.exit_index:
            raise ValueError(f"exit {exit_index} is not on the path of {self.id}")
        return Variant(exit_index, self.operators[: exit_index + 1], self.resolution)

    def __str__(self) -> str:
        return self.id
