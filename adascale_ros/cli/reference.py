"""The command-line reference, docs/cli.md, generated from the parsers: ``python -m adascale_ros.cli.reference``."""

from __future__ import annotations

import argparse
import os
import sys

from adascale_ros.cli.main import build_parser

WIDTH = 100  # argparse wraps help to the terminal's width; the reference must not depend on it


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def markdown() -> str:
    """Every command's help, in the order ``adascale --help`` lists them."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)
    try:
        parser = build_parser()
        lines = [
            "# The `adascale` command line",
            "",
            "Generated from the parsers by `python -m adascale_ros.cli.reference > docs/cli.md`;",
            "`test/test_readme.py` checks that it is current.",
            "",
        ]
        commands = _subcommands(parser)
        lines += [f"- [`{name}`](#adascale-{name})" for name in commands]
        for name, command in commands.items():
            nested = _subcommands(command)
            for full, sub in [(name, command)] + [(f"{name} {n}", p) for n, p in nested.items()]:
                lines += ["", f"## adascale {full}", "", "```text", sub.format_help().rstrip(), "```"]
        return "\n".join(lines) + "\n"
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


if __name__ == "__main__":
    sys.stdout.write(markdown())
