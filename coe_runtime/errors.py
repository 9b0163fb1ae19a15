"""Errors with a user-facing message and an exit-code class, and the one classification of exceptions
into exit codes (used by the runtime's entry point ``coe_runtime.__main__`` and by the pod launcher
``coe_runtime.launch``).

Exit codes are the contract with Kubernetes (PyTorchJob ``restartPolicy: ExitCode``):
1-127 are permanent (bad config, bad data: retrying cannot help), 128-255 are
retryable (storage/network outage, preemption: the pod is restarted).

| code | meaning |
| --- | --- |
| 1 | permanent: an unexpected defect (:data:`EXIT_BUG`) |
| 2 | permanent: bad config or data (:data:`EXIT_PERMANENT`) |
| 3 | permanent: the pod asked for GPUs but CUDA is unusable (:data:`EXIT_NO_GPU`) |
| 128+N | retryable: stopped by signal N (143 = SIGTERM: preemption, node drain, eviction) |
| 175 | retryable: storage or network outage (:data:`EXIT_RETRYABLE`) |
| 176 | retryable: a peer of the distributed job was lost (:data:`EXIT_PEER_LOST`) |
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Mapping

EXIT_BUG = 1  # an unexpected exception: a defect, reported with its traceback
EXIT_PERMANENT = 2  # bad input / bad config
EXIT_NO_GPU = 3  # the step's pod requested GPUs but CUDA is unusable: never silently train on CPU
EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143: the pod was stopped; retrying resumes from the checkpoint
EXIT_RETRYABLE = 175  # transient trouble: storage or network outage
EXIT_PEER_LOST = 176  # another rank/pod of the job died or became unreachable (gloo/NCCL/c10d store)

# Set by the controller's renderer (coe_controller.render) on step pods that request nvidia.com/gpu:
# the number of GPUs per pod the step must see (check_expected_gpus).
EXPECT_GPUS_ENV = "COE_EXPECT_GPUS"


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


# Import names of the training stack (the package's `runtime` extra), which a controller-only
# install (`pip install coe-k8s`, the controller image) does not have.
TRAINING_STACK = ("torch", "transformers", "peft")
RUNTIME_INSTALL_HINT = "pip install 'coe-k8s[runtime]'"


class MissingTrainingStack(ConfigError):
    """Something that trains, generates or tokenizes was asked of an install without the training stack."""


def require_training_stack(what: str) -> None:
    """Raise :class:`MissingTrainingStack`, naming the missing packages and the install command, when
    ``what`` cannot run here; a controller-only install then says so instead of failing deep inside."""
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [name for name in TRAINING_STACK if absent(name)]
    if missing:
        raise MissingTrainingStack(
            f"{what} needs the training stack, which is not installed here (missing: {', '.join(missing)}); "
            f"install it with: {RUNTIME_INSTALL_HINT}"
        )


class StoreError(CoEError):
    """Permanent storage trouble (wrong credentials, missing bucket, checksum mismatch)."""


class TransientStoreError(StoreError):
    """Storage outage that a retry of the pod may fix."""

    exit_code = EXIT_RETRYABLE


class DeviceError(CoEError):
    """The pod asked for GPUs and CUDA cannot give them: permanent (the same image on the same kind of
    node fails the same way; the message names what to fix)."""

    exit_code = EXIT_NO_GPU


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


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or during (HF Trainer / DeepSpeed re-raise collectives' errors)."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


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


def is_retryable(code: int | None) -> bool:
    """The exit-code contract, stated once: 128-255 is worth another attempt (outage, preemption,
    OOM kill); everything the local executor, the launcher and the reconcile loop decide uses it."""
    return code is not None and 128 <= code <= 255


def is_permanent(code: int | None) -> bool:
    """1-127: bad config or data (or a defect): a retry cannot help."""
    return code is not None and 1 <= code <= 127


# -- environment checks at step start -------------------------------------------------------------------
def expected_gpus(env: Mapping[str, str] | None = None) -> int:
    """GPUs per pod the step must see (``COE_EXPECT_GPUS``; unset or 0: none expected)."""
    env = os.environ if env is None else env
    raw = (env.get(EXPECT_GPUS_ENV) or "").strip()
    if not raw:
        return 0
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{EXPECT_GPUS_ENV}={raw!r}: expected a whole number of GPUs") from None
    if n < 0:
        raise ConfigError(f"{EXPECT_GPUS_ENV}={raw!r}: expected a whole number of GPUs")
    return n


def check_expected_gpus(env: Mapping[str, str] | None = None) -> None:
    """Fail at once (:class:`DeviceError`, exit 3) when the pod asked for GPUs and CUDA cannot supply
    them, instead of letting every step fall back to CPU and train 100x slower without a word."""
    env = os.environ if env is None else env
    n = expected_gpus(env)
    if n == 0:
        return
    import warnings

    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()  # a broken driver warns here and answers False
        count = torch.cuda.device_count() if available else 0
    local_rank = int(env.get("LOCAL_RANK") or 0)
    if available and count >= n and local_rank < count:
        return
    if not available:
        problem = "CUDA is unavailable (torch.cuda.is_available() is False)"
    elif count < n:
        problem = f"only {count} CUDA device(s) are visible"
    else:
        problem = f"LOCAL_RANK {local_rank} has no device of its own ({count} visible): nprocPerNode > GPUs"
    details = [
        f"torch {torch.__version__}",
        f"torch.version.cuda={torch.version.cuda or 'None (a CPU-only build of torch)'}",
        f"CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}",
        f"NVIDIA_VISIBLE_DEVICES={env.get('NVIDIA_VISIBLE_DEVICES', '<unset>')!r}",
    ]
    details += [f"torch warned: {w.message}" for w in caught]
    raise DeviceError(
        f"expected {n} GPU(s) ({EXPECT_GPUS_ENV}={n}: the pod requested nvidia.com/gpu) but {problem}; "
        f"refusing to run on CPU. {'; '.join(details)}"
    )
