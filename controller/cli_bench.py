"""``coe-ctl bench quality``: the CoE ablation table on real data (bench/quality in the repository).

A thin wrapper over ``python -m bench.quality.run``: same options, same resumable behaviour. The
benchmark lives in the source tree (its specs and RESULTS.md are repository files), so the command
needs a checkout: it is there in an editable install (``pip install -e .``, what ``make`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from coe_runtime.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _runner():
    if not (REPO / "bench" / "quality" / "run.py").is_file():
        raise ConfigError(
            f"coe-ctl bench needs the source checkout (bench/quality/ not found beside {REPO / 'controller'}); "
            "install with `pip install -e .` from a clone"
        )
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.quality import run

    return run


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks run from the source checkout")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    quality = bench_sub.add_parser(
        "quality",
        help="run the CoE ablation arms on MELD/EmoryNLP and write bench/quality/RESULTS.md (resumable)",
    )
    with contextlib.suppress(ConfigError):  # no checkout: the command still exists and explains itself
        _runner().add_arguments(quality)
    quality.set_defaults(func=_quality)


def _quality(args: argparse.Namespace) -> int:
    return _runner().main_with_args(args, command="coe-ctl bench quality")
