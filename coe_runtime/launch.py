"""``python -m coe_runtime.launch [torchrun arguments]``: torchrun that exits with a code that says
whether a retry can help.

Step pods run this instead of a bare ``torchrun``. torchrun exits 1 whenever a worker fails, whatever
the worker's own exit code, and 1 when the pod is stopped. Under ``restartPolicy: ExitCode`` 1 means
"permanent", so every failure, an S3 outage or a preemption included, would end the job without a pod
restart, and the controller could not tell a bad config from a network hiccup. The runtime's contract
(``coe_runtime.errors``: 1-127 permanent, 128-255 retryable) only reaches Kubernetes if the pod exits
with the right code, which is what this wrapper does:

* a worker failure: the exit code of the *first* worker that failed (torchrun stops the others after
  it, so theirs say nothing about the cause); a worker killed by signal N exits 128+N, as a shell
  reports it (retryable: OOM kill, preemption); a worker that lost a peer (gloo/NCCL) exits
  ``EXIT_PEER_LOST`` (176) itself, by the runtime's classification;
* the pod is stopped (preemption, node drain, Kueue eviction: SIGTERM, then SIGKILL after the grace
  period): torchrun's agent stops the workers and raises ``SignalException``; the pod exits 128+N
  (143 for SIGTERM, retryable) instead of 1;
* the nodes could not rendezvous (a peer pod not scheduled yet, a network partition):
  ``EXIT_RETRYABLE`` (175); the c10d store unreachable (``DistNetworkError``): ``EXIT_PEER_LOST``;
* anything else torchrun raises (bad arguments) propagates and exits 1.

Exceptions are classified by ``coe_runtime.errors.exit_code_for``, the runtime's own classification.

It runs torchrun in this process (``torch.distributed.run.main``), so PET_* variables, arguments and
output are exactly torchrun's. The runtime image carries both packages, so this module is there.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from coe_runtime.errors import EXIT_BUG, exit_code_for, is_retryable, signal_exit_code

# torchrun's agent handles these (torch/distributed/elastic/multiprocessing/api.py, PContext.start:
# TORCHELASTIC_SIGNALS_TO_HANDLE, default "SIGTERM,SIGINT,SIGHUP,SIGQUIT").
_DEFAULT_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT"


def pod_exit_code(worker_exitcode: int) -> int:
    """The pod's exit code for a failed worker's ``exitcode`` (negative: killed by that signal)."""
    if worker_exitcode < 0:
        return signal_exit_code(-worker_exitcode)
    if worker_exitcode == 0:
        return 1  # torchrun called it a failure although the process exited 0: not ours to retry
    return min(worker_exitcode, 255)


def _on_signal(signum, frame) -> None:
    """Until torchrun's agent installs its own handler (when it starts the workers), a stop signal
    ends the launcher the way the agent's would. Without this, a SIGTERM during the import of torch or
    the rendezvous (waiting for peer pods, possibly minutes) would be *ignored*: the launcher is the
    container's PID 1, and the kernel drops signals PID 1 has no handler for, so the pod would wait
    for SIGKILL at the end of the grace period."""
    sig = signal.Signals(signum)
    signal_exc = getattr(
        sys.modules.get("torch.distributed.elastic.multiprocessing.api"), "SignalException", None
    )
    if signal_exc is not None:
        # What torch's _terminate_process_handler raises (torch/distributed/elastic/multiprocessing/api.py).
        raise signal_exc(f"Process {os.getpid()} got signal: {sig}", sigval=sig)
    raise SystemExit(signal_exit_code(signum))  # torch is still being imported


def _has_live_children() -> bool | None:
    """Whether this process has child processes (torchrun's workers) that are not zombies; None where
    there is no /proc to tell."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    me = str(os.getpid())
    for stat in proc.glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if ppid == me and state != "Z":
            return True
    return False


def _watch_blocked_main_thread(signals: set[int], grace_s: float = 1.0) -> None:
    """Python runs signal handlers in the main thread between bytecodes, so a stop signal stays pending
    while the agent blocks in C++: the rendezvous' TCPStore waiting for the other pods
    (torch/distributed/elastic/rendezvous/static_tcp_rendezvous.py), the exit barrier. The C-level
    handler still writes the signal number to the wakeup fd; this thread reads it and, when no worker
    was running as the signal came (so there is nothing for the agent to stop) and the main thread has
    not ended the process ``grace_s`` later, exits with 128+N itself. With workers running, the agent
    is in its Python monitor loop and handles the signal (torch/distributed/elastic/agent/server/
    api.py: ``SimpleElasticAgent.run``)."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread: nothing to watch
        return

    def watch() -> None:
        keep = writer  # the wakeup fd must stay open as long as the process lives
        while keep.fileno() >= 0:
            data = reader.recv(64)
            if not data:
                return
            for signum in data:
                if signum not in signals or _has_live_children() is not False:
                    continue  # workers running (or no /proc to tell): the agent stops them and exits
                time.sleep(grace_s)
                code = signal_exit_code(signum)
                os.write(
                    2,
                    f"coe launch: got {signal.Signals(signum).name} while torchrun waited (no workers "
                    f"running): pod exits {code} (retryable)\n".encode(),
                )
                os._exit(code)

    threading.Thread(target=watch, name="coe-launch-signals", daemon=True).start()


def _install_signal_handlers() -> None:
    signals = set()
    for name in os.environ.get("TORCHELASTIC_SIGNALS_TO_HANDLE", _DEFAULT_SIGNALS).split(","):
        sig = getattr(signal, name.strip(), None)
        if isinstance(sig, signal.Signals):
            signal.signal(sig, _on_signal)
            signals.add(int(sig))
    _watch_blocked_main_thread(signals)


def main(argv: list[str] | None = None) -> int:
    _install_signal_handlers()
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
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
    except (Exception, KeyboardInterrupt) as e:
        # torch/distributed/elastic/agent/server/api.py (SimpleElasticAgent.run): on SignalException the
        # agent has already stopped the workers (the same signal, SIGKILL after --shutdown-timeout) and
        # re-raises; torch/distributed/launcher/api.py (launch_agent) re-raises it too.
        code = exit_code_for(e)
        if code == EXIT_BUG:
            raise  # unexpected: keep torchrun's traceback
        kind = "retryable" if is_retryable(code) else "permanent"
        print(
            f"coe launch: torchrun stopped ({type(e).__name__}: {e}): pod exits {code} ({kind})",
            file=sys.stderr,
        )
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
