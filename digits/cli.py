"""The ``digits`` command: ``digits --help``.

``digits up`` runs the local stack (what ``make up`` runs). Client commands that talk to
a running API over HTTP are added here as subcommands.
"""

from __future__ import annotations

import argparse
import sys


def _up(args) -> int:
    from digits import stack

    return stack.main(args.rest)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="digits", description="Handwritten-digit recogniser: serve it, or talk to it.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    up = sub.add_parser("up", help="serve the whole stack locally (Redis, workers, API)",
                        add_help=False)
    up.add_argument("rest", nargs=argparse.REMAINDER)
    up.set_defaults(run=_up)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
