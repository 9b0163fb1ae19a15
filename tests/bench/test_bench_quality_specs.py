"""The arm specs: every arm of a dataset shares the budget, plans, and the cluster arms validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from coe_controller.planner import plan
from coe_controller.spec import load_spec, parse_spec

from bench.quality import run as runner

REPO = Path(__file__).resolve().parents[2]
ARMS = set(runner.CORE_ARMS)
# Both datasets have the controls of issue 18 item 4 and erc-only's seed repeats (run last).
POWERED_ARMS = [*runner.ARM_ORDER, "erc-only-seed2", "erc-only-seed3"]
EXPECTED_ARMS = {"meld": POWERED_ARMS, "emorynlp": POWERED_ARMS}
EXPECTED_STAGES = {
    "erc-only": ("erc",),
    "clues": ("erc",),
    "clues-no-future": ("erc",),
    "steer": ("steer", "erc"),
    "full-curriculum": ("roleplay", "speaker_id", "steer", "erc"),
    "mixed-auxiliary": ("steer", "mixed", "erc"),
    "erc-only-matched": ("erc",),
}


@pytest.mark.parametrize("dataset", runner.DATASETS)
def test_bench_cpu_arms_share_one_budget_and_plan(dataset, tmp_path):
    folder = runner.BENCH_DIR / dataset
    assert {p.stem for p in folder.glob("*.yaml")} == set(EXPECTED_ARMS[dataset])
    # bind data files to stand-ins so the test needs no real data
    data = tmp_path / dataset
    data.mkdir()
    for p in folder.glob("*.yaml"):
        for f in yaml.safe_load(p.read_text())["spec"]["dataset"]["files"].values():
            (data / Path(f).name).write_text("")
    arms = runner.load_arms(folder, tmp_path)
    assert [a.name for a in arms] == EXPECTED_ARMS[dataset]
    runner.check_same_budget(arms)
    caches: dict[str, set[bool]] = {}
    for arm in arms:
        s = arm.spec.spec
        assert s.stage_order == EXPECTED_STAGES[arm.base]
        assert s.base_model.name_or_path == "smollm2-135m-gguf"
        assert s.dataset.max_test_examples == 0  # the full test split
        assert (s.clues.source == "none") == arm.base.startswith("erc-only")
        if s.clues.cache:
            caches.setdefault(s.clues.cache, set()).add(s.clues.future_turns)
        names = [st.name for st in plan(arm.spec)]
        assert names[-2:] == ["erc", "test"]
    # one clue cache per clue setting: future-turn clues are never mixed with the others
    assert all(len(v) == 1 for v in caches.values())
    assert len(caches) == 2
    # both datasets: the clues without future turns are their own arm
    by_name = {a.name: a for a in arms}
    assert by_name["clues-no-future"].spec.spec.clues.future_turns is False
    assert by_name["clues"].spec.spec.clues.future_turns is True
    repeats = [a for a in arms if a.repeat_of]
    assert {a.repeat_of for a in repeats} == {"erc-only"}
    assert sorted(a.seed for a in repeats) == [2, 3] and by_name["erc-only"].seed == 42
    assert by_name["erc-only-matched"].matched_to == "full-curriculum"


def test_bench_meld_compute_matched_arm_adds_the_curriculums_earlier_steps(tmp_path):
    """erc-only-matched trains ERC for erc-only's steps plus what full-curriculum spends before ERC."""
    arms = _meld_arms(tmp_path)
    by_name = {a.name: a for a in arms}
    stages = runner.compute_matched_steps(by_name["full-curriculum"].spec)
    assert stages == [("roleplay", 3800, 475), ("speaker_id", 3800, 475), ("steer", 11, 18)]
    assert runner.planned_train_steps(by_name["erc-only"].spec, "erc", 3800) == 950
    assert runner.planned_train_steps(by_name["erc-only-matched"].spec, "erc", 3800) == 950 + 968
    assert by_name["erc-only-matched"].spec.spec.training.erc.epochs == runner.epochs_for_steps(1918, 950)


def _meld_arms(tmp_path: Path) -> list:
    folder = runner.BENCH_DIR / "meld"
    data = tmp_path / "meld"
    data.mkdir(exist_ok=True)
    for p in folder.glob("*.yaml"):
        for f in yaml.safe_load(p.read_text())["spec"]["dataset"]["files"].values():
            (data / Path(f).name).write_text("")
    return runner.load_arms(folder, tmp_path)


def test_bench_cluster_arms_validate_against_the_crd_and_plan():
    from tests.packaging import packaging_support as ps

    crd = ps.require_crd()
    paths = sorted((REPO / "manifests" / "examples").glob("quality-*.yaml"))
    assert {p.stem.removeprefix("quality-") for p in paths} == ARMS
    for path in paths:
        obj = yaml.safe_load(path.read_text())
        assert not ps.validate_against_crd(obj, crd), path.name
        spec = parse_spec(obj, str(path))
        s = spec.spec
        arm = obj["metadata"]["labels"]["coe.ml/arm"]
        assert s.stage_order == EXPECTED_STAGES[arm]
        assert s.base_model.name_or_path == "mistralai/Mistral-7B-v0.1"
        assert s.resources.deepspeed == "zero2" and s.resources.gpus_per_pod >= 1
        assert s.store.startswith("s3://")
        # the paper's settings
        assert (s.lora.r, s.lora.alpha, s.dataset.max_length, s.training.erc.epochs) == (16, 16, 1400, 20)
        steps = plan(spec)
        assert all(st.config.distributed.deepspeed == "zero2" for st in steps if st.kind == "train")


def test_bench_cpu_spec_runs_directly_with_coe_ctl_paths():
    """`coe-ctl run bench/quality/meld/erc-only.yaml` works too: files resolve to ../shared/data."""
    spec = load_spec(runner.BENCH_DIR / "meld" / "erc-only.yaml")
    assert spec.spec.dataset.files.train == str(
        (REPO.parent / "shared" / "data" / "meld" / "train_sent_emo.csv").resolve()
    )
    assert spec.spec.store == "file://" + str((REPO / "coe-runs" / "quality").resolve())
