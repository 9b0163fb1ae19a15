"""Reference bug 3: with several GPUs, rank-local indices were matched against the global gold list.

Two processes (torchrun, gloo) must accept exactly what one process accepts on the same generations.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from coe_runtime.data.dialogue import read_examples
from coe_runtime.steer import run_steer_round
from tests.steer.steer_dist_worker import N_POOL, ScriptedShardedGenerator, make_step
from tests.support.pythonpath import child_pythonpath

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_accept_what_one_process_accepts(tmp_path):
    single = tmp_path / "single"
    (single / "in").mkdir(parents=True)
    one = run_steer_round(
        make_step(single / "in", f"file://{single}/store/steer-r1"), generator=ScriptedShardedGenerator()
    )
    assert 0 < one["accepted"] < N_POOL and one["rationalized"] > 0 and one["capped"] > 0  # a test with teeth

    multi = tmp_path / "multi"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": child_pythonpath()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(REPO / "tests" / "steer" / "steer_dist_worker.py"), str(multi)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Both ranks generated a shard (neither did all the work).
    calls = [list(map(int, (multi / f"calls-rank{r}.txt").read_text().split())) for r in (0, 1)]
    assert calls[0][0] + calls[1][0] == N_POOL and min(calls[0][0], calls[1][0]) > 0

    def published(root: Path) -> tuple[list, list]:
        memory = read_examples(root / "store" / "steer-r1" / "memory-r1.jsonl")
        pool = read_examples(root / "store" / "steer-r1" / "pool-r1.jsonl")
        return [(ex.id, ex.target, ex.meta["label"]) for ex in memory], [ex.id for ex in pool]

    assert published(multi) == published(single)
