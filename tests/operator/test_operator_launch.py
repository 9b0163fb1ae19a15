"""coe_controller.launch: torchrun whose exit code is the failed worker's (bare torchrun exits 1)."""

from __future__ import annotations

import os
import subprocess
import sys

from coe_controller.launch import pod_exit_code

from coe_runtime.errors import EXIT_PERMANENT, EXIT_RETRYABLE


def test_pod_exit_code_keeps_the_workers_code_and_maps_signals():
    assert pod_exit_code(EXIT_PERMANENT) == EXIT_PERMANENT
    assert pod_exit_code(EXIT_RETRYABLE) == EXIT_RETRYABLE
    assert pod_exit_code(-9) == 137  # SIGKILL (OOM killer): 128 + 9, retryable
    assert pod_exit_code(-15) == 143
    assert pod_exit_code(0) == 1


def test_launch_exits_with_the_workers_code_under_real_torchrun(tmp_path):
    # retryable: a bare torchrun would exit 1, which restartPolicy ExitCode reads as permanent
    worker_code = EXIT_RETRYABLE
    script = tmp_path / "worker.py"
    script.write_text(f"import sys\nprint('worker ran')\nsys.exit({worker_code})\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "coe_controller.launch", "--nnodes=1", "--nproc-per-node=1", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == worker_code, proc.stderr[-2000:]
    assert "worker ran" in proc.stdout
    assert f"exit code {worker_code}: pod exits {worker_code}" in proc.stderr
