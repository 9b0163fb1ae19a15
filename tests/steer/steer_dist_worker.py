"""Worker for the 2-process STEeR test: ``torchrun --nproc_per_node=2 steer_dist_worker.py OUT_DIR``.

The generator is the runtime's real ``Generator`` (its rank sharding and gathering) with the model
replaced by a script: the text for a prompt depends on the prompt alone, so 1 and 2 processes see
the same generations and must accept the same examples.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from coe_runtime.data.dialogue import Example, write_examples
from coe_runtime.data.labels import get_label_set
from coe_runtime.distributed import dist_info
from coe_runtime.models.generate import Generator, GenOutput
from coe_runtime.prompts.builder import ANSWER_HEADER
from coe_runtime.step import LabelSetRef, SteerOptions, SteerRoundStep

LABEL_SET = get_label_set("emorynlp")
N_POOL = 23  # odd: the two shards differ in size


class ScriptedShardedGenerator(Generator):
    def __init__(self) -> None:  # no model: _generate_local is scripted
        self.calls: list[int] = []

    def _generate_local(self, prompts, settings, on_progress=None):
        self.calls.append(len(prompts))
        out = []
        for p in prompts:
            h = int(hashlib.sha256(p.encode()).hexdigest(), 16)
            hinted = "Hint:" in p
            if hinted:  # rationalization lands on the hinted label half of the time
                label = (
                    p.split("Hint: the correct emotion is <", 1)[1].split(">", 1)[0] if h % 2 else "neutral"
                )
            else:
                label = LABEL_SET.prompt_names[h % len(LABEL_SET.prompt_names)]
            text = f"Reason {h % 1000} for this line. <{label}>"
            out.append(GenOutput(text, len(p.split()), 6))
        return out


def make_inputs(folder: Path) -> tuple[str, str]:
    labels = LABEL_SET.labels
    pool = []
    for i in range(N_POOL):
        prompt = f"Scene {i}: someone speaks.\n### Question\nWhich emotion?\n{ANSWER_HEADER}"
        pool.append(
            Example(
                f"steer:u{i:03d}", "steer", prompt, "", {"uid": f"u{i:03d}", "label": labels[i % len(labels)]}
            )
        )
    seed = Example(
        "steer:seed",
        "steer",
        "Seed prompt\n" + ANSWER_HEADER,
        "Because. <mad>",
        {"uid": "seed", "label": "Mad"},
    )
    write_examples(folder / "memory-r0.jsonl", [seed])
    write_examples(folder / "pool-r0.jsonl", pool)
    return f"file://{folder}/memory-r0.jsonl", f"file://{folder}/pool-r0.jsonl"


def make_step(inputs: Path, output: str) -> SteerRoundStep:
    memory, pool = make_inputs(inputs)
    return SteerRoundStep(
        name="steer-r1",
        output=output,
        round=1,
        memory=memory,
        pool=pool,
        adapter="file:///unused",
        label_set=LabelSetRef(name="emorynlp"),
        # The generate/tag rule: the scripted model only generates (score decoding is not scripted).
        steer=SteerOptions(
            rationalization=True,
            max_accept_per_class=2,
            answer_mode="generate",
            accept="tag",
            gate_examples=0,
            rationalization_check=False,
        ),
    )


def main(out_dir: str) -> None:
    import os

    import torch.distributed as dist

    from coe_runtime.steer import run_steer_round

    rank = int(os.environ["RANK"])
    folder = Path(out_dir) / f"inputs-rank{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    gen = ScriptedShardedGenerator()
    run_steer_round(make_step(folder, f"file://{out_dir}/store/steer-r1"), generator=gen)
    assert dist_info() == (rank, 2), "run_steer_round joins the process group torchrun set up"
    (Path(out_dir) / f"calls-rank{rank}.txt").write_text(" ".join(map(str, gen.calls)))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
