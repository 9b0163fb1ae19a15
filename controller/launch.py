"""``python -m coe_controller.launch [torchrun arguments]``: torchrun that exits with its worker's code.

Step pods run this instead of a bare ``torchrun``. torchrun exits 1 whenever a worker fails, whatever
the worker's own exit code. Under ``restartPolicy: ExitCode`` 1 means "permanent", so every failure,
an S3 outage included, would end the job without a pod restart, and the controller could not tell a
bad config from a network hiccup. The runtime's contract (``coe_runtime.__main__``: 1-127 permanent,
128-255 retryable) only reaches Kubernetes if the pod exits with the worker's code, which is what
this wrapper does:

* a worker failure: the exit code of the *first* worker that failed (torchrun stops the others after
  it, so theirs say nothing about the cause); a worker killed by signal N exits 128+N, as a shell
  reports it (retryable: OOM kill, preemption);
* the nodes could not rendezvous (a peer pod not scheduled yet, a network partition):
  ``EXIT_RETRYABLE``;
* anything else torchrun raises (bad arguments) propagates and exits 1.

It runs torchrun in this process (``torch.distributed.run.main``), so PET_* variables, arguments and
output are exactly torchrun's. The runtime image carries both packages, so this module is there.
"""

from __future__ import annotations

import sys

from coe_runtime.errors import EXIT_RETRYABLE


def pod_exit_code(worker_exitcode: int) -> int:
    """The pod's exit code for a failed worker's ``exitcode`` (negative: killed by that signal)."""
    if worker_exitcode < 0:
        return min(128 - worker_exitcode, 255)
    if worker_exitcode == 0:
        return 1  # torchrun called it a failure although the process exited 0: not ours to retry
    return min(worker_exitcode, 255)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(sys.argv[1:] if argv is None else argv)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = pod_exit_code(failure.exitcode)
        print(
            f"coe launch: worker rank {rank} failed first, exit code {failure.exitcode}: pod exits {code}",
            file=sys.stderr,
        )
        return code
    except RendezvousError as e:
        print(f"coe launch: rendezvous failed ({type(e).__name__}: {e}): retryable", file=sys.stderr)
        return EXIT_RETRYABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
