"""The ``adascale`` command line."""

from __future__ import annotations

import argparse
import sys

from adascale_ros.cli import bags, evaluation, graph, load, model, profiling

# Command groups in the order ``adascale --help`` lists them.
GROUPS = (graph, load, model, bags, evaluation, profiling)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adascale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as exc:  # includes ModelLoadError and DatasetError
        print(f"adascale {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adascale {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
