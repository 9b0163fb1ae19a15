"""``python -m coe_runtime <kind> --config step.json|yaml``: run one step of a CoE plan.

The same entrypoint runs in a PyTorchJob pod (under ``torchrun``) and in the local executor's
subprocess. The exit code is the contract with Kubernetes (``restartPolicy: ExitCode``):
0 done; 1-127 permanent (bad config or data: a retry cannot help); 128-255 retryable (storage or
network outage, preemption: the pod is restarted and the step resumes from its last checkpoint).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from coe_runtime.errors import EXIT_PERMANENT, EXIT_RETRYABLE, CoEError
from coe_runtime.step import STEP_KINDS, load_step

EXIT_BUG = 1  # an unexpected exception: a defect, reported with its traceback
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the pod was stopped; retrying resumes from the checkpoint


def is_transient(exc: BaseException) -> bool:
    """Network/storage trouble that a restarted pod may not meet again."""
    if isinstance(exc, CoEError):
        return exc.exit_code >= 128
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
    except ImportError:
        return False
    return isinstance(exc, BotoConnectionError | EndpointConnectionError | ReadTimeoutError)


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, CoEError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_PREEMPTED
    if is_transient(exc):
        return EXIT_RETRYABLE
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return EXIT_PERMANENT  # a path in the config that is wrong: retrying cannot help
    return EXIT_BUG


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def _rank_prefix() -> str:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coe_runtime", description="Run one step of a CoE plan.")
    parser.add_argument("kind", choices=STEP_KINDS, help="the step kind (must match the config's 'kind')")
    parser.add_argument("--config", required=True, help="step config file (.json, .yaml or .yml)")
    args = parser.parse_args(argv)
    try:
        step = load_step(args.config)
        if step.kind != args.kind:
            raise CoEConfigMismatch(
                f"{args.config}: the config is a {step.kind!r} step, but {args.kind!r} was asked for"
            )
        from coe_runtime.driver import run_step

        summary = run_step(step)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one message and an exit code
        if isinstance(exc, SystemExit):
            raise
        code = exit_code_for(exc)
        kind = "retryable" if code >= 128 else "permanent"
        if code == EXIT_BUG:
            traceback.print_exc()
            message = (
                f"internal error ({type(exc).__name__}: {exc}); please report it with the traceback above"
            )
        elif isinstance(exc, KeyboardInterrupt):
            message = "interrupted; the step resumes from its last checkpoint when restarted"
        else:
            message = str(exc) if isinstance(exc, CoEError) else _describe(exc)
        print(f"{_rank_prefix()}error ({kind}, exit {code}): {message}", file=sys.stderr)
        return code
    if summary is not None:
        from coe_runtime import progress

        progress.report(step=step.name, phase="finished", summary=summary)
    return 0


class CoEConfigMismatch(CoEError):
    exit_code = EXIT_PERMANENT


if __name__ == "__main__":
    sys.exit(main())
