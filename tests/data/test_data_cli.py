"""``coe-ctl data check`` / ``data preview`` through the real entry point (coe_controller.cli.main)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from coe_controller.cli import main

from coe_runtime import data_report
from coe_runtime.data.labels import get_label_set
from coe_runtime.data.readers import read_file
from coe_runtime.prepare import percentile
from coe_runtime.prompts.builder import erc_target, required_length
from coe_runtime.prompts.tasks import build_examples
from tests.support.shared import need_shared


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def check_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "data", "check", *argv, "--output", "json")
    assert code == 0, err
    return json.loads(out)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def line(dia, speaker, text, label, **extra) -> dict:
    return {"dialogue_id": dia, "speaker": speaker, "text": text, "label": label, **extra}


def small_dataset(tmp_path: Path) -> Path:
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            line("a", "Ivy", "The parcel finally came today.", "happy"),
            line("a", "Jon", "About time, it took three weeks.", "frustrated"),
            line("a", "Ivy", "Open it with me?", "excited"),
            line("b", "Kai", "I lost my keys again.", "sad"),
        ],
    )
    write_jsonl(
        tmp_path / "test.jsonl",
        [line("c", "ivy", "Who moved my chair?", "angry"), line("c", "Jon", "Not me.", "neutral")],
    )
    return tmp_path


def test_check_demo_matches_reader(capsys):
    report = check_json(capsys, "--format", "demo")
    expected = {}
    for d in read_file(None, "demo"):
        s = expected.setdefault(d.split, {"dialogues": 0, "utterances": 0})
        s["dialogues"] += 1
        s["utterances"] += len(d.utterances)
    assert {
        k: {"dialogues": v["dialogues"], "utterances": v["utterances"]} for k, v in report["splits"].items()
    } == expected
    assert report["label_set"] == "demo" and report["prompt"]["tokenizer"] == "estimate"
    assert report["prompt"]["clues"] == "bundled demo clues"
    for s in report["splits"].values():
        t = s["prompt_tokens"]
        assert 0 < t["p50"] <= t["p90"] <= t["p99"] <= t["max"]
        assert sum(s["labels"].values()) == s["utterances"]


def test_prompt_lengths_agree_with_task_builder(tmp_path):
    """The check's counts are exactly what tasks.build_examples records, and 'cannot fit' is what
    prompts.required_length says."""
    label_set = get_label_set("iemocap")
    dialogues = read_file(small_dataset(tmp_path) / "train.jsonl", "jsonl", label_set="iemocap")
    counter = data_report.TokenCounter("estimate")
    stats = data_report.prompt_lengths(dialogues, label_set, counter, window=12, max_length=100_000)
    examples = build_examples(dialogues, "erc", label_set, history_window=12, max_length=100_000)
    counts = sorted(e.meta["n_tokens"] for e in examples)
    assert stats["max"] == counts[-1] and stats["p50"] == percentile(counts, 50)
    needs = [
        required_length(d, i, "erc", label_set, target=erc_target(u.label, label_set))
        for d in dialogues
        for i, u in enumerate(d.utterances)
    ]
    limit = max(needs)  # every prompt fits without history; longer ones must shed some
    stats = data_report.prompt_lengths(dialogues, label_set, counter, window=12, max_length=limit)
    assert stats["over_max_length"] == sum(n > limit for n in counts) > 0
    assert stats["cannot_fit"] == 0
    stats = data_report.prompt_lengths(dialogues, label_set, counter, window=12, max_length=limit - 1)
    assert stats["cannot_fit"] == sum(n > limit - 1 for n in needs) > 0


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50, 90, 99, 100]
    assert percentile([7], 99) == 7


def test_check_reports_problems_and_strict_exit(tmp_path, capsys):
    root = small_dataset(tmp_path)
    report = check_json(
        capsys, str(root), "--format", "jsonl", "--label-set", "iemocap", "--max-length", "64"
    )
    problems = "\n".join(report["problems"])
    assert "no dev split" in problems
    assert "test: no utterances labelled ['happy', 'sad', 'excited', 'frustrated']" in problems
    assert "speaker name(s) are spelled several ways (case/spacing), e.g. ['Ivy', 'ivy']" in problems
    assert report["splits"]["train"]["speakers"] == 3
    assert report["splits"]["train"]["dialogue_length"] == {"min": 1, "median": 2, "max": 3}
    code, out, _ = run(
        capsys, "data", "check", str(root), "--format", "jsonl", "--label-set", "iemocap", "--strict"
    )
    assert code == 2 and "problem(s):" in out and "no dev split" in out


def test_check_flags_dialogues_in_two_splits(tmp_path, capsys):
    write_jsonl(tmp_path / "train.jsonl", [line(1, "A", "Morning.", "neutral")])
    write_jsonl(tmp_path / "dev.jsonl", [line(1, "B", "Evening.", "neutral")])
    write_jsonl(tmp_path / "test.jsonl", [line(2, "A", "Night.", "neutral")])
    report = check_json(capsys, str(tmp_path), "--format", "jsonl", "--label-set", "iemocap")
    assert any("1 dialogue id(s) occur in more than one split (e.g. '1')" in p for p in report["problems"])
    assert any("1 utterance id(s) occur in more than one split" in p for p in report["problems"])


def test_check_table_output(capsys):
    code, out, _ = run(capsys, "data", "check", "--format", "demo", "--window", "3")
    assert code == 0
    for heading in (
        "Splits",
        "Labels",
        "ERC prompt + target tokens (estimate, window 3",
        "no problems found",
    ):
        assert heading in out


def test_check_notes_mojibake_repair(tmp_path, capsys):
    header = (
        "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
    )
    row = '1,It\x92s fine.,Ana,neutral,neutral,0,0,1,1,"0:00:01,000","0:00:02,000"'
    (tmp_path / "dev_sent_emo.csv").write_text(f"{header}\r\n{row}\r\n", encoding="utf-8")
    report = check_json(capsys, str(tmp_path), "--format", "meld")
    assert report["notes"] == [
        "repaired 1 field(s) holding cp1252 punctuation decoded as Latin-1 (first at line 2)"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "jsonl", "--label-set", "iemocap"], "error: format 'jsonl' needs a PATH"),
        (["{root}", "--format", "jsonl"], "error: format 'jsonl' needs --label-set"),
        (["{root}/nowhere", "--format", "meld"], "nowhere: no such file or directory"),
        (
            ["{root}/train.jsonl", "--format", "jsonl", "--label-set", "meld"],
            "train.jsonl:1: unknown label 'happy'; expected one of",
        ),
        (["--format", "demo", "--max-length", "10"], "error: --max-length must be at least"),
    ],
)
def test_check_bad_input_exit_2(tmp_path, capsys, argv, message):
    root = small_dataset(tmp_path)
    code, out, err = run(capsys, "data", "check", *(a.format(root=root) for a in argv))
    assert code == 2
    assert message in err and err.count("\n") == 1  # one line, no traceback


@pytest.mark.realdata
def test_check_real_meld(data_dir, capsys):
    meld = need_shared(data_dir / "meld")
    report = check_json(capsys, str(meld), "--format", "meld", "--label-naming", "coe")
    train = report["splits"]["train"]
    assert (train["dialogues"], train["utterances"], train["labels"]["joy"]) == (1038, 9989, 1743)
    assert train["prompt_tokens"]["over_max_length"] == 0 and report["problems"] == []


def test_preview_by_uid_and_index(capsys):
    demo = read_file(None, "demo", split="dev")
    target = demo[0].utterances[1]
    code, out, _ = run(
        capsys,
        "data",
        "preview",
        "--format",
        "demo",
        "--uid",
        target.uid,
        "--task",
        "roleplay",
        "--output",
        "json",
    )
    assert code == 0
    example = json.loads(out)
    assert example["id"] == f"roleplay:{target.uid}" and example["target"] == " ".join(target.text.split())
    code, out, _ = run(capsys, "data", "preview", "--format", "demo", "--split", "dev", "--index", "1")
    assert code == 0 and f"erc:{target.uid}" in out and "tokens (prompt + target, estimate)" in out
    assert f"<{target.label}>" in out


def test_preview_steer_seed_and_pool(capsys):
    from coe_runtime.data.seeds import load_seeds

    seed = load_seeds("demo")[0]
    code, out, _ = run(
        capsys,
        "data",
        "preview",
        "--format",
        "demo",
        "--uid",
        seed.uid,
        "--task",
        "steer",
        "--output",
        "json",
    )
    assert code == 0
    example = json.loads(out)
    assert example["meta"]["steer_set"] == "memory" and example["target"].endswith(f"<{seed.label}>")


def test_preview_bad_selection(capsys):
    code, _, err = run(capsys, "data", "preview", "--format", "demo", "--split", "test", "--index", "100000")
    assert code == 2 and "--index 100000 is out of range: the test split has" in err
    code, _, err = run(capsys, "data", "preview", "--format", "demo", "--uid", "nope")
    assert code == 2 and "no utterance with id 'nope'" in err


def test_check_with_tiny_tokenizer(capsys):
    estimate = check_json(capsys, "--format", "demo")
    exact = check_json(capsys, "--format", "demo", "--tokenizer", "tiny")
    assert exact["prompt"]["tokenizer"] == "tiny"
    # Different counters give different, still ordered, counts.
    tiny = exact["splits"]["train"]["prompt_tokens"]
    assert tiny != estimate["splits"]["train"]["prompt_tokens"]
    assert tiny["p50"] <= tiny["p90"] <= tiny["max"]
