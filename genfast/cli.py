"""Command line: `genfast info` and `genfast bench` (also `python -m genfast ...`)."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genfast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="versions, backends and why not, CPU SIMD level")
    p_info.add_argument("--json", action="store_true", help="print the info() dict as JSON")
    p_bench = sub.add_parser("bench", help="run the benchmark suites and print a table")
    from .bench.cli import add_arguments
    add_arguments(p_bench)
    args = parser.parse_args(argv)
    if args.command == "info":
        from .info import format_info, info
        d = info()
        print(json.dumps(d, indent=2) if args.json else format_info(d))
        return 0
    from .bench.cli import run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
