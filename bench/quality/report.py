"""RESULTS.md from collected arm results and baselines (pure: data in, Markdown out).

Each arm result is a plain dict (built by ``bench.quality.run.collect_arm``) with the keys used
below; a missing number renders as "—" and an arm that has not finished says which step is next,
so a partial run still gives a readable, honest table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from coe_runtime.steer import gate_warning

# Published figures (weighted F1 on test), from ../shared/data/README.md. Not produced here: those
# systems pick their best epoch on the test set and use 7B-13B models.
PAPER_FIGURES: dict[str, list[tuple[str, float]]] = {
    "meld": [
        ("CoE, mixed auxiliary + STEeR (Mistral-7B, LoRA)", 70.11),
        ("InstructERC (Llama-2-7B, LoRA)", 69.15),
        ("BiosERC (Llama-2-13B)", 69.83),
        ("LaERC-S", 69.27),
    ],
    "emorynlp": [
        ("CoE, mixed auxiliary + STEeR (Mistral-7B, LoRA)", 44.29),
        ("InstructERC (Llama-2-7B, LoRA)", 41.37),
        ("BiosERC (Llama-2-13B)", 41.68),
        ("LaERC-S", 42.08),
    ],
}
# The baselines' figures as measured for ../shared/data/README.md (weighted F1 on the full test split).
REFERENCE_BASELINES: dict[str, dict[str, float]] = {
    "meld": {"majority": 31.27, "tfidf_lr": 46.05},
    "emorynlp": {"majority": 13.25, "tfidf_lr": 31.48},
}
DASH = "—"


def fmt_num(x: Any, digits: int = 2) -> str:
    return DASH if x is None else f"{float(x):.{digits}f}"


def fmt_int(x: Any) -> str:
    return DASH if x is None else f"{int(x):,}"


def fmt_duration(seconds: Any) -> str:
    if seconds is None:
        return DASH
    s = int(round(float(seconds)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


def fmt_ci(ci: Mapping[str, Any] | None) -> str:
    return DASH if not ci else f"{ci['point']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def link(text: str, target: str | None) -> str:
    return text if not target else f"[{text}]({target})"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") if "](" not in c else c for c in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


MAIN_HEADER = (
    "arm",
    "dev wF1",
    "dev macro F1",
    "dev acc",
    "test wF1 [95% CI]",
    "test macro F1 [95% CI]",
    "test acc [95% CI]",
    "fallback parse %",
    "tokens trained",
    "tokens generated",
    "wall time",
    "run",
)


def arm_row(arm: Mapping[str, Any]) -> list[str]:
    dev = arm.get("dev") or {}
    ci = arm.get("test_ci") or {}
    test = arm.get("test") or {}
    if arm.get("complete"):
        name = arm["arm"]
    elif not arm.get("wall_s"):
        name = f"{arm['arm']} (not started)"
    else:
        name = f"{arm['arm']} (incomplete: next {arm.get('next_step')})"
    return [
        name,
        fmt_num(dev.get("weighted_f1")),
        fmt_num(dev.get("macro_f1")),
        fmt_num(dev.get("accuracy")),
        fmt_ci(ci.get("weighted_f1")),
        fmt_ci(ci.get("macro_f1")),
        fmt_ci(ci.get("accuracy")),
        fmt_num(test.get("fallback_share")),
        fmt_int(arm.get("tokens_trained")),
        fmt_int(arm.get("tokens_generated")),
        fmt_duration(arm.get("wall_s")),
        link("run dir", run_dir) if (run_dir := arm.get("links", {}).get("run_dir")) else DASH,
    ]


def baseline_row(b: Mapping[str, Any]) -> list[str]:
    ci = b.get("test_ci") or {}
    return [
        f"*{b['name']}*",
        DASH,
        DASH,
        DASH,
        fmt_ci(ci.get("weighted_f1")),
        fmt_ci(ci.get("macro_f1")),
        fmt_ci(ci.get("accuracy")),
        DASH,
        DASH,
        DASH,
        fmt_duration(b.get("seconds")),
        DASH,
    ]


def per_class_rows(
    labels: Sequence[str], arms: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]]
) -> list[list[str]]:
    rows = []
    for item in [*arms, *baselines]:
        per_class = (item.get("test") or {}).get("per_class") or {}
        if not per_class:
            continue
        name = item.get("arm") or f"*{item['name']}*"
        rows.append([name, *(fmt_num(per_class.get(lab, {}).get("f1")) for lab in labels)])
    return rows


def fmt_gate(gate: Mapping[str, Any] | None) -> str:
    """``with / without of n``, marked when the rationales hurt."""
    if not gate or not gate.get("n"):
        return DASH
    cell = f"{gate['correct_with']} / {gate['correct_without']} of {gate['n']}"
    return cell + (" (**hurt**)" if gate_warning(gate) else "")


def steer_rows(arms: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for arm in arms:
        for r in arm.get("steer_rounds") or []:
            rows.append(
                [
                    arm["arm"],
                    str(r.get("round")),
                    fmt_int(r.get("pool_size")),
                    fmt_int(r.get("accepted")),
                    f"{fmt_int(r.get('rationalized'))} of {fmt_int(r.get('hint_attempts'))}",
                    f"{fmt_int(r.get('check_rejected'))} / {fmt_int(r.get('contradicting'))} / "
                    f"{fmt_int(r.get('hint_leaned'))}",
                    fmt_num(100 * r["accuracy"] if r.get("accuracy") is not None else None),
                    fmt_gate(r.get("gate")),
                    fmt_int(r.get("cut_at_limit")),
                    fmt_int(r.get("memory_size")),
                    fmt_int(r.get("tokens_generated")),
                    "continue" if r.get("continue") else f"stop ({r.get('stop_reason') or ''})",
                ]
            )
    return rows


PAIRED_HEADER = (
    "arm",
    "seeds (arm / reference)",
    "Δ test wF1 [95% CI]",
    "Δ test acc [95% CI]",
    "bootstrap p",
    "McNemar p (only arm / only ref right)",
    "Holm-adjusted p",
    "with seed variation: SE, p (Holm)",
    "verdict",
)


def fmt_seeds(runs: Sequence[Mapping[str, Any]] | None) -> str:
    return ", ".join(str(r["seed"]) for r in runs or []) or DASH


def fmt_with_seeds(seeds: Mapping[str, Any] | None) -> str:
    if not seeds:
        return DASH
    return f"{seeds['se']:.2f}, {fmt_p(seeds['p_value'])} ({fmt_p(seeds.get('holm_p'))})"


def fmt_delta(d: Mapping[str, Any] | None) -> str:
    return DASH if not d else f"{d['delta']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"


def fmt_p(p: Any) -> str:
    if p is None:
        return DASH
    return "< 0.0001" if float(p) < 0.0001 else f"{float(p):.4f}"


def paired_rows(paired: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in paired.get("rows") or []:
        mc = r.get("mcnemar") or {}
        rows.append(
            [
                r["arm"],
                f"{fmt_seeds(r.get('runs'))} / {fmt_seeds(r.get('reference_runs'))}",
                fmt_delta(r.get("weighted_f1")),
                fmt_delta(r.get("accuracy")),
                fmt_p((r.get("weighted_f1") or {}).get("p_value")),
                f"{fmt_p(mc.get('p_value'))} ({fmt_int(mc.get('a_only'))} / {fmt_int(mc.get('b_only'))})"
                if mc
                else DASH,
                fmt_p(r.get("holm_p")),
                fmt_with_seeds(r.get("with_seeds")),
                r.get("verdict") or DASH,
            ]
        )
    return rows


def mde_line(paired: Mapping[str, Any]) -> str | None:
    mde = paired.get("mde")
    if not mde:
        return None
    line = (
        f"Smallest effect this table can detect (power {mde['power']:.0%}, two-sided α {mde['alpha']:g}, paired): "
        f"MDE = (z(1 − α/2) + z(power)) × SE = {mde['factor']:.2f} × {mde['se_median']:.2f} = "
        f"**{mde['weighted_f1']:.2f} points** of test weighted F1, SE being the median bootstrap standard "
        f"error of the {mde['comparisons']} paired differences (range {mde['se_min']:.2f}–{mde['se_max']:.2f}); "
        f"at Holm's first step (α/{mde['comparisons']}) {mde['factor_first_holm_step']:.2f} × SE = "
        f"{mde['weighted_f1_first_holm_step']:.2f} points. A true difference smaller than this is missed "
        "more often than one time in five — on another test sample, with the trained models held fixed."
    )
    if mde.get("seed_sd") is not None:
        line += (
            f" Counting the training seed too (sd {mde['seed_sd']:.2f} points of test weighted F1 over "
            f"{mde['reference_runs']} seeds of the reference, taken for every arm; SE = √(SE² + sd² (1/runs + "
            f"1/{mde['reference_runs']}))): **{mde['weighted_f1_with_seeds_one_run']:.2f} points** for an arm "
            f"of one run, {mde['weighted_f1_with_seeds_three_runs']:.2f} for an arm of three."
        )
    return line


def render_paired(paired: Mapping[str, Any]) -> list[str]:
    ref = paired.get("reference", "erc-only")
    runs = ", ".join(f"{r['run']} (seed {r['seed']})" for r in paired.get("reference_runs") or [])
    out = [f"### Paired against {ref}", ""]
    out.append(
        f"Each arm minus `{ref}` on the same {fmt_int(paired.get('n'))} test utterances ({fmt_int(paired.get('dialogues'))} "
        f"dialogues). Δ: the arm's mean over its scored seeds minus `{ref}`'s mean over its scored seeds "
        f"({ref} runs: {runs or DASH}), in points; interval and bootstrap p: "
        f"{fmt_int(paired.get('resamples'))} resamples of whole dialogues (seed {paired.get('seed', DASH)}), "
        "the same dialogues for every run. McNemar: exact test on per-utterance correctness of the arm's first "
        f"run against the {ref} run of the same seed (else its first run). Holm: the bootstrap p-values of "
        "weighted F1 corrected across the arms compared. The bootstrap holds the trained models fixed; "
        f"\"with seed variation\" adds the training seed's variance, estimated from {ref}'s seeds "
        "(normal approximation, Holm-corrected too). The verdict reads the Holm-adjusted bootstrap p at 0.05; "
        '"within seed variation" when the seed-aware test does not confirm it.'
    )
    out.append("")
    rows = paired_rows(paired)
    if rows:
        out += _table(PAIRED_HEADER, rows)
    else:
        out.append("No other arm has been scored on test yet.")
    out.append("")
    line = mde_line(paired)
    if line:
        out += [line, ""]
    if paired.get("pending"):
        out += [f"Not scored yet: {', '.join(paired['pending'])}.", ""]
    if paired.get("skipped"):
        out += [f"Not comparable (other test utterances or gold labels): {', '.join(paired['skipped'])}.", ""]
    return out


def fmt_mean_sd(stat: Mapping[str, Any] | None) -> str:
    if not stat or stat.get("mean") is None:
        return DASH
    sd = stat.get("sd")
    return f"{stat['mean']:.2f} ± {sd:.2f}" if sd is not None else f"{stat['mean']:.2f} (one seed)"


def seed_rows(seeds: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for s in seeds:
        runs = s.get("runs") or []
        scored = sum(1 for r in runs if r.get("scored"))
        rows.append(
            [
                s["arm"],
                ", ".join(f"{r['seed']}" + ("" if r.get("scored") else " (pending)") for r in runs),
                f"{scored} of {len(runs)}",
                fmt_mean_sd(s.get("test_weighted_f1")),
                fmt_mean_sd(s.get("test_accuracy")),
                fmt_mean_sd(s.get("dev_weighted_f1")),
                "; ".join(
                    f"seed {x['seed']}: {fmt_delta(x.get('weighted_f1'))}, p {fmt_p((x.get('weighted_f1') or {}).get('p_value'))}"
                    for x in s.get("against_first") or []
                )
                or DASH,
            ]
        )
    return rows


def render_section(section: Mapping[str, Any]) -> str:
    """One dataset's part of RESULTS.md.

    ``section`` keys: dataset, label_set, labels, test_n, dev_n, settings (list of lines),
    arms (arm dicts), baselines (baseline dicts), shared (list of lines: e.g. clue generation),
    bootstrap (resamples, seed), test_set_note.
    """
    ds = section["dataset"]
    arms = list(section.get("arms") or [])
    baselines = list(section.get("baselines") or [])
    boot = section.get("bootstrap") or {}
    out = [f"## {section.get('title', ds)}", ""]
    out += [f"- {line}" for line in section.get("settings") or []]
    out += [
        f"- Test: {fmt_int(section.get('test_n'))} utterances; dev (model selection): "
        f"{fmt_int(section.get('dev_n'))}. Scores in percent on label set `{section.get('label_set')}`; "
        f"95 % intervals: percentile bootstrap over test utterances, {boot.get('resamples', DASH)} resamples, "
        f"seed {boot.get('seed', DASH)}.",
    ]
    if section.get("test_set_note"):
        out.append(f"- {section['test_set_note']}")
    out += ["", "### Arms and reference baselines", ""]
    out += _table(MAIN_HEADER, [arm_row(a) for a in arms] + [baseline_row(b) for b in baselines])
    out += [
        "",
        "*Italic rows* are reference baselines computed by the runner on the same test utterances "
        "(no training budget; wall time is the fit + predict time). Tokens trained: non-padding "
        "tokens seen by all training steps of the arm (all epochs). Tokens generated: STEeR rationales, "
        "clue writing done by this arm, and test answers (dev answers during epoch selection are not "
        "counted). Wall time: every attempt of every step of the arm with the published result's "
        "settings, so an interrupted step that resumed from its checkpoint counts both parts.",
        "",
    ]
    refs = REFERENCE_BASELINES.get(ds)
    if refs and baselines:
        got = {b["key"]: (b.get("test_ci") or {}).get("weighted_f1", {}).get("point") for b in baselines}
        out += [
            "Baselines against the figures in `../shared/data/README.md` (weighted F1, full test split): "
            + "; ".join(f"{k}: {fmt_num(got.get(k))} here vs {v:.2f} there" for k, v in refs.items())
            + ".",
            "",
        ]
    if section.get("seeds"):
        out += ["### Seeds", ""]
        out += _table(
            [
                "arm",
                "optimizer seeds",
                "scored",
                "test wF1 mean ± sd",
                "test acc mean ± sd",
                "dev wF1 mean ± sd",
                "Δ test wF1 of each repeat vs the first seed [95% CI], bootstrap p",
            ],
            seed_rows(section["seeds"]),
        )
        out += [
            "",
            "Mean and sample standard deviation over the arm's scored seeds (the repeats' own rows are in "
            "the table above). The last column pairs each repeat with the arm's first seed on the same test "
            "utterances, with the dialogue bootstrap of the paired table: the same arm, only the training seed "
            "changed. A small p there says the test-sample bootstrap alone would call seed noise an effect — "
            "why the paired table also counts the seed's variance.",
            "",
        ]
    if section.get("paired"):
        out += render_paired(section["paired"])
    labels = section.get("labels") or []
    pc = per_class_rows(labels, arms, baselines)
    if pc:
        out += ["### Per-class F1 on test", ""]
        out += _table(["arm", *labels], pc)
        out.append("")
    sr = steer_rows(arms)
    if sr:
        out += ["### STEeR rounds", ""]
        out += _table(
            [
                "arm",
                "round",
                "pool",
                "accepted",
                "of which rationalized (of hinted)",
                "rejected: hint-free check / names another emotion / leans on the hint",
                "pool accuracy %",
                "gate: right with / without rationale",
                "cut at token limit",
                "memory after",
                "tokens generated",
                "decision",
            ],
            sr,
        )
        out += [
            "",
            "Gate: a held-out slice of the round's pool (never accepted that round) answered by the round's "
            "model twice, after its own rationale and directly; **hurt** when the rationale makes it right "
            "less often. Pool accuracy: the label scored after each pool example's rationale is gold.",
        ]
        out.append("")
    samples = [a for a in arms if a.get("rationale_samples")]
    if samples:
        out += [
            "### Rationale samples (last STEeR round of each arm)",
            "",
            "The model's own rationales, first accepted and rejected ones by id, with the label scored "
            "after each (answer) and, where the example was retried with the gold label as a hint, the "
            "hinted rationale — what memory stores for a rationalized example. Quoted spans and words "
            "repeated from the prompt are blanked and each is cut short, so no dataset line is reproduced here.",
            "",
        ]
        rows = [
            [
                a["arm"],
                str(a["rationale_samples"].get("round")),
                f"`{s.get('id')}`",
                str(s.get("gold")),
                str(s.get("answer", s.get("parsed"))),
                f"yes ({s.get('via')})" if s.get("accepted") else "no",
                s.get("text") or DASH,
                s.get("hint_text") or DASH,
            ]
            for a in samples
            for s in a["rationale_samples"].get("samples") or []
        ]
        out += _table(
            ["arm", "round", "example", "gold", "answer", "accepted", "own rationale", "hinted rationale"],
            rows,
        )
        out.append("")
    if section.get("shared"):
        out += ["### Shared work", ""] + [f"- {line}" for line in section["shared"]] + [""]
    papers = PAPER_FIGURES.get(ds)
    if papers:
        out += [
            "### Published figures (not produced here)",
            "",
            "Weighted F1 on test as the papers' own repositories report it, with 7B-13B models and the "
            "best epoch picked on the test set — labelled for context, not comparable to the rows above.",
            "",
        ]
        out += _table(["method (paper)", "test wF1"], [[name, f"{f1:.2f}"] for name, f1 in papers])
        out.append("")
    out += ["### Where each number comes from", ""]
    for arm in arms:
        links = arm.get("links") or {}
        parts = [
            link(key, links.get(key))
            for key in ("spec", "bench_spec", "steps", "best", "metrics", "predictions")
            if links.get(key)
        ]
        where = f" — run directory `{arm['store_run_dir']}`" if arm.get("store_run_dir") else ""
        out.append(
            f"- **{arm['arm']}** (`{arm.get('experiment')}`): "
            + " · ".join(p for p in parts if "](" in p)
            + where
        )
    out.append("")
    return "\n".join(out)


def render_results(sections: Sequence[Mapping[str, Any]], header: Sequence[str] = ()) -> str:
    """The whole RESULTS.md: a header, then one section per dataset."""
    out = ["# Quality benchmark: the CoE ablation table", ""]
    out += list(header)
    if header:
        out.append("")
    for s in sections:
        out.append(render_section(s))
    return "\n".join(out).rstrip() + "\n"
