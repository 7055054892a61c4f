"""A variant of the elastic network, by its id: no torch, so that nodes can parse ids cheaply."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VARIANT_ID = re.compile(r"^e(\d+):([a-z]+(?:-[a-z]+)*)$")


@dataclass(frozen=True, order=True)
class Variant:
    """An exit and the operator chosen at every stage up to it.

    Its id reads ``e<exit>:<op>-<op>-...``, e.g. ``e2:dws-mbc-res`` exits
    after the third stage (exit index 2) having run dws, mbc, then res.
    """

    exit_index: int
    operators: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.operators) != self.exit_index + 1:
            raise ValueError(f"exit {self.exit_index} needs {self.exit_index + 1} operators, got {self.operators}")

    @property
    def id(self) -> str:
        return f"e{self.exit_index}:{'-'.join(self.operators)}"

    @classmethod
    def parse(cls, variant_id: str) -> Variant:
        match = _VARIANT_ID.match(variant_id)
        if not match:
            raise ValueError(f"malformed variant id {variant_id!r}; expected e<exit>:<op>-<op>...")
        return cls(int(match.group(1)), tuple(match.group(2).split("-")))

    def prefix(self, exit_index: int) -> Variant:
        """The variant that stops at an earlier exit of this one's path (what a confidence early exit ran)."""
        if not 0 <= exit_index <= self.exit_index:
            raise ValueError(f"exit {exit_index} is not on the path of {self.id}")
        return Variant(exit_index, self.operators[: exit_index + 1])

    def __str__(self) -> str:
        return self.id
