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

# One classification of exceptions into exit codes, shared with the pod launcher (coe_runtime.launch).
from coe_runtime.errors import (  # noqa: F401 - EXIT_PREEMPTED, is_transient: part of this module's API
    EXIT_BUG,
    EXIT_PERMANENT,
    EXIT_PREEMPTED,
    CoEError,
    check_expected_gpus,
    exit_code_for,
    is_retryable,
    is_transient,
    require_training_stack,
)
from coe_runtime.step import STEP_KINDS, load_step


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
        if step.kind != "model":  # the model step only downloads
            require_training_stack(f"a {step.kind} step")
        check_expected_gpus()  # the pod asked for GPUs (COE_EXPECT_GPUS): fail now if CUDA cannot give them
        from coe_runtime.driver import run_step

        summary = run_step(step)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes one message and an exit code
        if isinstance(exc, SystemExit):
            raise
        code = exit_code_for(exc)
        kind = "retryable" if is_retryable(code) else "permanent"
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
