"""``coe-ctl``: one console script; each command group lives in its own ``cli_*`` module.

Exit codes: 0 success; 1 the experiment/step failed; 2 bad input (spec, data, arguments);
3 storage or cluster unreachable; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from coe_runtime.errors import CoEError, StoreError, TransientStoreError

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

# Modules that contribute commands: each has ``register(subparsers)`` adding parsers whose
# ``func(args) -> int`` runs the command.
COMMAND_MODULES = ("cli_data", "cli_local", "cli_artifacts", "cli_cluster", "cli_bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coe-ctl",
        description="Run and inspect CoE (Clue-of-Emotion) experiments, locally or on Kubernetes.",
        epilog="Exit codes: 0 ok, 1 experiment failed, 2 bad input, 3 storage/cluster unreachable, 130 interrupted.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"coe_controller.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"coe_controller.{name}":
                continue  # command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TransientStoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT if "credentials" not in str(e) else EXIT_UNREACHABLE
    except CoEError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
