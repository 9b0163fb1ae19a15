"""coe_runtime.launch: torchrun whose exit code follows the retry contract (bare torchrun exits 1 for
every worker failure and for SIGTERM, which ``restartPolicy: ExitCode`` reads as permanent)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coe_runtime import errors
from coe_runtime.errors import EXIT_PEER_LOST, EXIT_PERMANENT, EXIT_RETRYABLE, exit_code_for
from coe_runtime.launch import pod_exit_code
from tests.support.kmock_api import free_port
from tests.support.pythonpath import child_pythonpath

GLOO_PEER_LOSS = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
    "[127.0.0.1]:45278. This is typically caused by a remote worker crashing."
)


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "COE_EXPECT_GPUS"):
        env.pop(k, None)
    for k in [k for k in env if k.startswith(("PET_", "TORCHELASTIC_"))]:
        del env[k]
    return env


def _launch(*args: str) -> list[str]:
    return [sys.executable, "-m", "coe_runtime.launch", *args]


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# -- the classification (coe_runtime.errors, shared by the runtime and the launcher) --------------------
def test_pod_exit_code_keeps_the_workers_code_and_maps_signals():
    assert pod_exit_code(EXIT_PERMANENT) == EXIT_PERMANENT
    assert pod_exit_code(EXIT_RETRYABLE) == EXIT_RETRYABLE
    assert pod_exit_code(EXIT_PEER_LOST) == EXIT_PEER_LOST
    assert pod_exit_code(-9) == 137  # SIGKILL (OOM killer): 128 + 9, retryable
    assert pod_exit_code(-15) == 143
    assert pod_exit_code(0) == 1


@pytest.mark.parametrize(
    "message",
    [
        GLOO_PEER_LOSS,
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection reset by peer",
        "[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLREDUCE)",
        "NCCL communicator was aborted on rank 1.",
        "NCCL error: remote process exited or there was a network error, NCCL version 2.21.5",
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms for recv",
    ],
)
def test_peer_loss_is_retryable(message):
    assert exit_code_for(RuntimeError(message)) == EXIT_PEER_LOST
    # re-raised by a trainer: the cause decides
    try:
        try:
            raise RuntimeError(message)
        except RuntimeError as inner:
            raise ValueError("training step failed") from inner
    except ValueError as outer:
        assert exit_code_for(outer) == EXIT_PEER_LOST


def test_torch_distributed_and_torchrun_errors_are_classified():
    import torch.distributed as dist
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.rendezvous.api import RendezvousTimeoutError

    assert exit_code_for(dist.DistNetworkError("failed to connect to 10.0.0.1:23456")) == EXIT_PEER_LOST
    assert exit_code_for(dist.DistStoreError("wait timeout after 300000ms, keys: /barrier")) == EXIT_PEER_LOST
    assert exit_code_for(SignalException("got SIGTERM", sigval=signal.SIGTERM)) == 143
    assert exit_code_for(SignalException("got SIGINT", sigval=signal.SIGINT)) == 130
    assert exit_code_for(RendezvousTimeoutError("peers never came")) == EXIT_RETRYABLE
    assert exit_code_for(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) == errors.EXIT_BUG
    assert exit_code_for(errors.ConfigError("bad")) == EXIT_PERMANENT


def test_the_runtime_uses_the_same_classification():
    from coe_runtime import __main__ as entry

    assert entry.exit_code_for is errors.exit_code_for


# -- real torchrun under the launcher ---------------------------------------------------------------------
def test_launch_exits_with_the_workers_code_under_real_torchrun(tmp_path):
    # retryable: a bare torchrun would exit 1, which restartPolicy ExitCode reads as permanent
    worker_code = EXIT_RETRYABLE
    script = tmp_path / "worker.py"
    script.write_text(f"import sys\nprint('worker ran')\nsys.exit({worker_code})\n")
    cmd = _launch("--nnodes=1", "--nproc-per-node=1", str(script))
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == worker_code, proc.stderr[-2000:]
    assert "worker ran" in proc.stdout
    assert f"exit code {worker_code}: pod exits {worker_code}" in proc.stderr


def test_sigterm_stops_the_workers_and_exits_retryable(tmp_path):
    """Preemption / node drain / Kueue eviction: SIGTERM to the launcher (the pod's PID 1). torchrun's agent
    raises SignalException, which used to escape and exit 1 (permanent): the job failed for good."""
    pids = tmp_path / "pids"
    pids.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, pathlib, sys, time\n"
        f"pathlib.Path({str(pids)!r}, os.environ['LOCAL_RANK']).write_text(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    cmd = _launch("--nnodes=1", "--nproc-per-node=2", str(script))
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(pids.iterdir())) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "workers never started"
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in pids.iterdir()]
        assert all(_alive(p) for p in workers)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # the launcher only, as the kubelet does
        _out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        _stop(proc)
    assert proc.returncode == 143, err[-3000:]  # 128 + SIGTERM: retryable
    assert took < 20, took  # well before the kubelet's SIGKILL at the end of the 30 s grace period
    assert "pod exits 143 (retryable)" in err
    assert not [p for p in workers if _alive(p)]  # the workers are gone with it


def test_sigterm_while_waiting_for_peers_exits_retryable(tmp_path):
    """Before torchrun's agent starts workers (it waits for the other pods at the rendezvous, possibly
    minutes) the agent has no signal handler yet; as PID 1 the launcher would ignore SIGTERM."""
    script = tmp_path / "worker.py"
    script.write_text("raise SystemExit('never runs')\n")
    port = free_port()
    cmd = _launch(
        "--nnodes=2", "--node-rank=0", "--nproc-per-node=1", "--master-addr=127.0.0.1",
        f"--master-port={port}", str(script),
    )  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while True:  # node 0's agent serves the rendezvous store: it is waiting for node 1
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the rendezvous store never came up"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        _stop(proc)
    assert proc.returncode == 143, err[-3000:]
    assert took < 20, took


def test_a_worker_that_lost_its_peer_exits_retryable(tmp_path):
    """A real gloo peer loss: rank 1 goes away, rank 0's all_reduce raises "Connection closed by peer";
    the runtime's classification makes it EXIT_PEER_LOST, and the launcher passes it on."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import datetime, os, sys\n"
        "import torch, torch.distributed as dist\n"
        "from coe_runtime.errors import exit_code_for\n"
        "dist.init_process_group('gloo', timeout=datetime.timedelta(seconds=30))\n"
        "if dist.get_rank() == 1:\n"
        "    os._exit(0)  # the peer disappears without a word\n"
        "try:\n"
        "    dist.all_reduce(torch.ones(1))\n"
        "except Exception as e:\n"
        "    print('rank 0:', e, file=sys.stderr)\n"
        "    sys.exit(exit_code_for(e))\n"
    )
    cmd = _launch("--nnodes=1", "--nproc-per-node=2", str(script))
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_PEER_LOST, proc.stderr[-3000:]
    assert "closed by peer" in proc.stderr.lower() or "reset by peer" in proc.stderr.lower()
    assert f"pod exits {EXIT_PEER_LOST}" in proc.stderr


def test_a_bad_config_stays_permanent(tmp_path):
    """The real runtime entry point under the launcher, with a config it rejects: 2, never retried."""
    config = tmp_path / "step.json"
    config.write_text(
        json.dumps({"kind": "generate", "name": "g", "output": str(tmp_path / "o"), "bogus": 1})
    )
    cmd = _launch(
        "--nnodes=1", "--nproc-per-node=1", "-m", "coe_runtime", "generate", "--config", str(config)
    )
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_PERMANENT, proc.stderr[-3000:]
    assert "permanent" in proc.stderr and f"pod exits {EXIT_PERMANENT}" in proc.stderr
