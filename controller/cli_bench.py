"""``coe-ctl bench quality``: the CoE ablation table on real data (bench/quality in the repository).

The same program as ``python -m bench.quality.run``: same options, same resumable behaviour, and
RESULTS.md names ``coe-ctl bench quality`` as the command that produced it. The benchmark is
repository content (its specs and RESULTS.md are files of the checkout), not part of the
installed package, so coe-ctl runs it in a child interpreter whose import path starts at the
checkout (``PYTHONPATH``; ``-P`` keeps the working directory off it) and waits for it. coe-ctl's
own import path is left alone, so none of the checkout's folders can shadow an installed module.
The command needs that checkout: the one an editable install (``pip install -e .``, what ``make``
does) was made from; from any other install it says so and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from coe_runtime.errors import ConfigError

# The checkout this package was installed from in editable mode (controller/ is its top level).
REPO = Path(__file__).resolve().parent.parent
COMMAND = "coe-ctl bench quality"
QUALITY_HELP = "run the CoE ablation arms on MELD/EmoryNLP and write bench/quality/RESULTS.md (resumable)"


def checkout() -> Path:
    """The source checkout that holds bench/quality, or a ConfigError saying how to get one."""
    if not (REPO / "bench" / "quality" / "run.py").is_file():
        raise ConfigError(
            f"coe-ctl bench runs the benchmarks of the source checkout, and this coe-ctl was not installed "
            f"from one (no bench/quality/ beside {REPO / 'controller'}): in a clone, run `make setup-test` "
            "or `pip install -e '.[runtime]'`, then this command"
        )
    return REPO


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks run from the source checkout")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    # Every argument goes to the benchmark's own parser in the child, which also answers --help: no
    # prefix character this parser would recognise, so it takes options as plain words.
    quality = bench_sub.add_parser(
        "quality",
        help=QUALITY_HELP,
        usage=f"{COMMAND} [-h] [OPTIONS ...]  (see {COMMAND} --help)",
        add_help=False,
        prefix_chars="\0",
    )
    quality.add_argument("bench_args", nargs="*", metavar="OPTIONS")
    quality.set_defaults(func=_quality)


def _quality(args: argparse.Namespace) -> int:
    repo = checkout()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-P", "-m", "coe_controller.cli_bench", *args.bench_args]
    with _child_handles_ctrl_c():
        child = subprocess.Popen(cmd, env=env)
        code = child.wait()
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's 128 + signal number


@contextlib.contextmanager
def _child_handles_ctrl_c() -> Iterator[None]:
    """Ctrl-C reaches the child too (same process group): it stops its step and exits 130 with the
    resume hint. Like system(3), coe-ctl lets SIGINT pass while it waits, so it reports the child's
    code. (A handler, not SIG_IGN: exec resets a handler to the default, an ignored signal stays
    ignored in the child.)"""
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _child_main(argv: list[str]) -> int:
    """The child: bench.quality.run from the checkout (first on PYTHONPATH), under coe-ctl's exit codes."""
    from coe_controller.cli import _run

    from bench.quality import run

    parser = argparse.ArgumentParser(prog=COMMAND, description=QUALITY_HELP)
    run.add_arguments(parser)
    args = parser.parse_args(argv)
    args.func = lambda a: run.main_with_args(a, command=COMMAND)
    return _run(args)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
