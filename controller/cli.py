"""``coe-ctl``: one console script; each command group lives in its own ``cli_*`` module.

Exit codes: 0 success; 1 the experiment/step failed; 2 bad input (spec, data, arguments);
3 storage or cluster unreachable; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
from collections.abc import Iterator
from typing import TextIO

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
        importlib.import_module(f"coe_controller.{name}").register(sub)
    return parser


class _OwnWritesOnly(io.TextIOBase):
    """``sys.stdout`` while a ``--output json`` command runs: only coe-ctl's own writes reach stdout.

    Libraries print and log to stdout on their own: DeepSpeed's logger, for one, writes a
    "Setting accelerator to CPU" warning there when transformers imports it on the way to saving
    a model (the built-in tiny model, on an empty ``$COE_CACHE_DIR``). Whatever is written by code
    outside ``coe_controller`` (library prints, logging handlers, rich consoles) goes to stderr,
    so stdout holds exactly the JSON document, whatever the cache holds. A handler that keeps this
    stream after the command writes to the process's stdout again.
    """

    def __init__(self, out: TextIO, err: TextIO):
        self._out, self._err = out, err
        self.active = True

    def _target(self) -> TextIO:
        if not self.active:
            return sys.__stdout__ or self._err
        caller = sys._getframe(2).f_globals.get("__name__", "")
        return self._out if caller.split(".")[0] == "coe_controller" else self._err

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        for stream in (self._out, self._err):
            with contextlib.suppress(ValueError, OSError):
                stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # a library writing to the descriptor is not coe-ctl's JSON
        return self._err.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._out, "encoding", None) or "utf-8"


@contextlib.contextmanager
def _stdout_for(args: argparse.Namespace) -> Iterator[None]:
    """With ``--output json``, stdout carries only what coe-ctl writes (see ``_OwnWritesOnly``)."""
    if getattr(args, "output", None) != "json":
        yield
        return
    original = sys.stdout
    router = _OwnWritesOnly(original, sys.stderr)
    sys.stdout = router
    try:
        yield
    finally:
        router.flush()
        router.active = False
        if sys.stdout is router:
            sys.stdout = original


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with _stdout_for(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
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
