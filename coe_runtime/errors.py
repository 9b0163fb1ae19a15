"""Errors with a user-facing message and an exit-code class.

Exit codes are the contract with Kubernetes (PyTorchJob ``restartPolicy: ExitCode``):
1-127 are permanent (bad config, bad data: retrying cannot help), 128-255 are
retryable (storage/network outage, preemption: the pod is restarted).
"""

from __future__ import annotations

EXIT_PERMANENT = 2  # bad input / bad config
EXIT_RETRYABLE = 175  # transient trouble: storage or network outage


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
