"""Errors with a user-facing message and an exit-code class, and the one classification of exceptions
into exit codes (used by the runtime's entry point ``coe_runtime.__main__`` and by the pod launcher
``coe_controller.launch``).

Exit codes are the contract with Kubernetes (PyTorchJob ``restartPolicy: ExitCode``):
1-127 are permanent (bad config, bad data: retrying cannot help), 128-255 are
retryable (storage/network outage, preemption: the pod is restarted).

| code | meaning |
| --- | --- |
| 1 | permanent: an unexpected defect (:data:`EXIT_BUG`) |
| 2 | permanent: bad config or data (:data:`EXIT_PERMANENT`) |
| 128+N | retryable: stopped by signal N (143 = SIGTERM: preemption, node drain, eviction) |
| 175 | retryable: storage or network outage (:data:`EXIT_RETRYABLE`) |
| 176 | retryable: a peer of the distributed job was lost (:data:`EXIT_PEER_LOST`) |
"""

from __future__ import annotations

import signal
import sys

EXIT_BUG = 1  # an unexpected exception: a defect, reported with its traceback
EXIT_PERMANENT = 2  # bad input / bad config
EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143: the pod was stopped; retrying resumes from the checkpoint
EXIT_RETRYABLE = 175  # transient trouble: storage or network outage
EXIT_PEER_LOST = 176  # another rank/pod of the job died or became unreachable (gloo/NCCL/c10d store)


class CoEError(Exception):
    """Base class: carries a message meant for a human, never a traceback."""

    exit_code = EXIT_PERMANENT


class DataError(CoEError):
    """Bad input data. Formats as ``file:line: what was expected``."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ConfigError(CoEError):
    """Invalid step config or experiment spec (lists every problem by field path)."""


class StoreError(CoEError):
    """Permanent storage trouble (wrong credentials, missing bucket, checksum mismatch)."""


class TransientStoreError(StoreError):
    """Storage outage that a retry of the pod may fix."""

    exit_code = EXIT_RETRYABLE


# -- the classification ---------------------------------------------------------------------------------
def signal_exit_code(signum: int) -> int:
    """128 + N for a process stopped by signal N, as a shell and the container runtime report it."""
    return min(128 + int(signum), 255)


# What a collective reports when another rank died or its host became unreachable. Seen with this torch
# (2.13, gloo): "[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:45278. This is
# typically caused by a remote worker crashing." NCCL (torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp):
# "NCCL communicator was aborted on rank N", the watchdog's "Watchdog caught collective operation
# timeout", ncclRemoteError's "remote process exited or there was a network error".
PEER_LOSS_MESSAGES = (
    "connection closed by peer",
    "connection reset by peer",
    "connection refused",
    "nccl communicator was aborted",
    "watchdog caught collective operation timeout",
    "remote process exited or there was a network error",
    "socket timeout",
)


def _causes(exc: BaseException):
    """``exc`` and what it was raised from or during (HF Trainer / DeepSpeed re-raise collectives' errors)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_peer_loss(exc: BaseException) -> bool:
    """A collective or the c10d store failed because a peer went away: retrying the pod can help.

    ``torch.distributed.DistNetworkError`` / ``DistStoreError`` (the rendezvous store unreachable or a
    peer never answering) by type; gloo's and NCCL's RuntimeErrors (``DistBackendError`` included) by
    their message. torch is looked up only if already imported: an exception of its types implies it.
    """
    dist = sys.modules.get("torch.distributed")
    by_type = tuple(
        t for t in (getattr(dist, "DistNetworkError", None), getattr(dist, "DistStoreError", None)) if t
    )
    for e in _causes(exc):
        if by_type and isinstance(e, by_type):
            return True
        if isinstance(e, RuntimeError):
            text = str(e).lower()
            if any(m in text for m in PEER_LOSS_MESSAGES) or ("gloo" in text and "timed out" in text):
                return True
    return False


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


def _torch_type(module: str, name: str):
    return getattr(sys.modules.get(module), name, None)


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception that ends a step (the runtime) or torchrun (the launcher)."""
    if isinstance(exc, CoEError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_PREEMPTED
    # torchrun's agent turns SIGTERM/SIGINT/SIGHUP/SIGQUIT into SignalException (torch/distributed/
    # elastic/multiprocessing/api.py: _terminate_process_handler); it carries the signal.
    signal_exc = _torch_type("torch.distributed.elastic.multiprocessing.api", "SignalException")
    if signal_exc is not None and isinstance(exc, signal_exc):
        return signal_exit_code(exc.sigval)
    # The nodes could not rendezvous (a peer pod not scheduled yet, a network partition).
    rendezvous_exc = _torch_type("torch.distributed.elastic.rendezvous.api", "RendezvousError")
    if rendezvous_exc is not None and isinstance(exc, rendezvous_exc):
        return EXIT_RETRYABLE
    if is_peer_loss(exc):
        return EXIT_PEER_LOST
    if is_transient(exc):
        return EXIT_RETRYABLE
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return EXIT_PERMANENT  # a path in the config that is wrong: retrying cannot help
    return EXIT_BUG


def is_retryable(code: int) -> bool:
    return 128 <= code <= 255
