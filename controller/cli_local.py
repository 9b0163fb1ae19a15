"""``coe-ctl`` commands for specs and local runs: validate, plan, run, status, logs.

Exit codes (as for every coe-ctl command): 0 ok; 1 a step failed; 2 bad input (spec, arguments);
3 storage unreachable; 130 interrupted (rerun ``coe-ctl run`` to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from coe_controller.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED

from coe_runtime.errors import ConfigError, require_training_stack

EXIT_CODES = (
    "exit codes: 0 ok, 1 a step failed, 2 bad input (spec or arguments), 3 storage unreachable, "
    "130 interrupted (run again to resume)"
)


def _console(args: argparse.Namespace) -> Any:
    from rich.console import Console

    # JSON on stdout stays machine-readable: human output goes to stderr then.
    return Console(stderr=getattr(args, "output", "table") == "json", highlight=False)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


# -- validate ------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from coe_controller.planner import plan
    from coe_controller.spec import load_spec

    try:
        spec = load_spec(args.spec)
        steps = plan(spec)
    except ConfigError as e:
        if args.output == "json":
            _print_json({"valid": False, "spec": args.spec, "errors": str(e).splitlines()[1:] or [str(e)]})
        else:
            print(f"invalid: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.output == "json":
        _print_json(
            {
                "valid": True,
                "spec": args.spec,
                "name": spec.name,
                "strategy": spec.spec.strategy,
                "steps": [s.name for s in steps],
            }
        )
    else:
        print(
            f"valid: {spec.name} ({spec.spec.strategy}, {len(steps)} steps planned, store {spec.spec.store})"
        )
    return 0


# -- plan ------------------------------------------------------------------------------------


def _observe_or_none(spec: Any, console: Any) -> Any:
    """The experiment state from the store, or None (said on stderr) when the store cannot be read."""
    from coe_controller.state import observe

    from coe_runtime.errors import StoreError

    try:
        return observe(spec)
    except StoreError as e:
        print(f"note: cannot read the store, showing the plan only ({e})", file=sys.stderr)
        return None


def step_action(view: Any) -> str:
    """What a run does with a step: reuse it, run it (new, or again because it is stale), or wait."""
    if view.done:
        return "reuse"
    if view.state == "tentative":
        return "tentative"
    return "rerun (stale)" if view.earlier else "run"


def print_step_actions(console: Any, state: Any) -> None:
    """Which steps are reused, which are stale and why, which will run (``plan`` and ``run``)."""
    from rich.table import Table

    t = Table(title=f"{state.spec.name}: what a run does", title_justify="left")
    for col in ("step", "fingerprint", "action", "why"):
        t.add_column(col, overflow="fold")
    colours = {"reuse": "green", "run": "cyan", "rerun (stale)": "yellow", "tentative": "dim"}
    for v in state.steps:
        action = step_action(v)
        why = "; ".join(v.changes) if v.changes else ("published" if v.done else "")
        t.add_row(v.name, v.step.config.fingerprint, f"[{colours[action]}]{action}[/]", why)
    console.print(t)
    if state.holds_earlier_results:
        console.print(
            "the store also holds results of an earlier spec of this experiment, kept under their own "
            "fingerprints (see docs/storage.md)"
        )


def cmd_plan(args: argparse.Namespace) -> int:
    from coe_controller.planner import plan
    from coe_controller.spec import load_spec

    spec = load_spec(args.spec)
    console = _console(args)
    state = None if args.no_store else _observe_or_none(spec, console)
    steps = state.plan if state is not None else plan(spec, {})
    if args.output == "json":
        _print_json(_plan_document(spec, steps, state))
        return 0
    console.print(_plan_table(spec, steps))
    console.print(f"outputs under {_experiment_folder(spec)}<step>/<fingerprint>/")
    if any(s.tentative for s in steps):
        console.print(
            "[yellow]tentative[/]: planned as if every undecided STEeR round continues; "
            "each round's round-N.json decides whether the next one runs."
        )
    if state is not None:
        print_step_actions(console, state)
    return 0


def _plan_document(spec: Any, steps: list, state: Any) -> dict[str, Any]:
    """``coe-ctl plan --output json``: the steps, with what a run does with each when the store was read."""
    from coe_controller.planner import plan_as_dicts

    rows = plan_as_dicts(steps)
    if state is not None:
        for row, v in zip(rows, state.steps, strict=True):
            row.update({"action": step_action(v), "changes": v.changes})
    return {"experiment": spec.name, "strategy": spec.spec.strategy, "steps": rows}


def _experiment_folder(spec: Any) -> str:
    return f"{spec.spec.store.rstrip('/')}/{spec.name}/"


def _plan_table(spec: Any, steps: list) -> Any:
    """One row per planned step: what it needs, starts from and reads (URIs under the experiment's
    folder shortened), and where it runs."""
    from rich.table import Table

    table = Table(title=f"{spec.name}: {spec.spec.strategy} ({len(steps)} steps)", title_justify="left")
    for col in ("#", "step", "kind", "needs", "starts from", "reads", "resources"):
        table.add_column(col, overflow="fold")
    prefix = _experiment_folder(spec)

    def short(uri: str | None) -> str:
        return "-" if not uri else uri.removeprefix(prefix)

    for i, s in enumerate(steps, 1):
        start = _starts_from(s.config)
        name = f"{s.name} [yellow](tentative)[/]" if s.tentative else s.name
        table.add_row(
            str(i),
            name,
            s.kind,
            ", ".join(s.needs) or "-",
            short(start) if start != "base model" else start,
            "\n".join(short(x) if "://" in x else x for x in _step_reads(s.config)),
            _step_resources(s),
        )
    return table


def _starts_from(config: Any) -> str | None:
    """The adapter a step starts from; a training step without one starts from the base model."""
    start = getattr(config, "init_adapter", None) or getattr(config, "adapter", None)
    if config.kind == "train" and start is None:
        return "base model"
    return start


def _step_reads(config: Any) -> list[str]:
    """What a step reads, by its kind."""
    from coe_runtime import step as rt

    c = config
    if isinstance(c, rt.TrainStep):
        return [*c.train_files, *([c.eval_file] if c.eval_file else [])]
    if isinstance(c, rt.GenerateStep):
        return [c.input_file]
    if isinstance(c, rt.SteerRoundStep):
        return [c.memory, c.pool]
    if isinstance(c, rt.PrepareStep):
        return [f"{c.dataset.format} data"] + ([c.clues] if c.clues else [])
    if isinstance(c, rt.CluesStep):
        return [f"{c.dataset.format} data"]
    if isinstance(c, rt.ModelStep):
        return [f"Hub {c.base_model.name_or_path}" + (f"@{c.revision}" if c.revision else "")]
    return []


def _step_resources(step: Any) -> str:
    r = step.resources
    if not r:
        return ""
    d = step.config.distributed
    return f"{r.gpus_per_pod} GPU x{d.nproc_per_node} proc x{d.nnodes} node"


# -- run -------------------------------------------------------------------------------------


def _summary_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"{summary['experiment']}: results", title_justify="left")
    t.add_column("split")
    t.add_column("weighted F1", justify="right")
    t.add_column("majority-class baseline", justify="right")

    def fmt(x: Any) -> str:
        return f"{x:.2f}" if isinstance(x, (int, float)) else "-"

    for split, key in (("dev (best epoch)", "dev"), ("test", "test")):
        base = summary.get(f"{key}_baseline") or {}
        label = f" ({base['label']})" if base.get("label") else ""
        t.add_row(split, fmt(summary.get(f"{key}_weighted_f1")), fmt(base.get("weighted_f1")) + label)
    return t


def cmd_run(args: argparse.Namespace) -> int:
    from coe_controller.local import LocalExecutor, experiment_summary
    from coe_controller.spec import load_spec

    spec = load_spec(args.spec)
    require_training_stack("coe-ctl run (it runs every step here)")
    console = _console(args)
    executor = LocalExecutor(spec, console=console)
    console.print(f"[bold]{spec.name}[/]: {spec.spec.strategy}, store {spec.spec.store}")
    if args.output != "json":
        state = _observe_or_none(spec, console)
        if state is not None:
            print_step_actions(console, state)
    result = executor.run()
    if result.interrupted or not result.ok:
        assert result.failed is not None  # a run that did not finish names the step it stopped at
        return _report_unfinished(args, console, result.failed, result.interrupted)
    summary = experiment_summary(spec)
    if args.output == "json":
        _print_json({"ok": True, **summary})
        return 0
    _print_results(console, summary)
    return 0


def _report_unfinished(args: argparse.Namespace, console: Any, failed: Any, interrupted: bool) -> int:
    """An interrupted run (resumable) or a failed step: its reason, log and last log lines."""
    if interrupted:
        console.print(f"[yellow]interrupted[/] during {failed.step}; run the same command again to resume.")
        return EXIT_INTERRUPTED
    f = failed
    console.print(f"[red]step {f.step} failed[/]: {f.reason}")
    console.print(f"log: {f.log_uri}   (coe-ctl logs {f.step} --spec {args.spec})")
    if f.log_tail:
        console.print("last log lines:")
        for line in f.log_tail:
            console.print("  " + line, markup=False, highlight=False)
    if args.output == "json":
        _print_json(
            {
                "ok": False,
                "failed_step": f.step,
                "reason": f.reason,
                "log": f.log_uri,
                "log_tail": f.log_tail,
            }
        )
    return EXIT_FAILED


def _print_results(console: Any, summary: dict[str, Any]) -> None:
    console.print(_summary_table(summary))
    for key, label in (
        ("adapter", "ERC adapter"),
        ("predictions", "test predictions"),
        ("metrics", "test metrics"),
    ):
        if summary.get(key):
            console.print(f"{label}: {summary[key]}")
    console.print(f"all artifacts: {summary['store']}/")


# -- status ------------------------------------------------------------------------------------


def _resolve_experiment(args: argparse.Namespace) -> Any:
    """The spec from a SPEC file, or from a store's saved run (EXPERIMENT + --store)."""
    from coe_controller.local import find_experiment
    from coe_controller.spec import load_spec

    from coe_runtime.store import normalize_uri

    target = args.target
    if target and (Path(target).is_file() or target.endswith((".yaml", ".yml"))):
        return load_spec(target)
    if args.store:
        return find_experiment(normalize_uri(args.store), target)
    raise ConfigError("give a SPEC file, or an EXPERIMENT name with --store URI")


def cmd_status(args: argparse.Namespace) -> int:
    from coe_controller.local import experiment_status

    is_file = bool(args.target) and (Path(args.target).is_file() or args.target.endswith((".yaml", ".yml")))
    if not is_file and not args.store:
        from coe_controller.cli_cluster import cluster_status

        return int(cluster_status(args) or 0)
    if not args.target:
        return _list_local_runs(args)
    spec = _resolve_experiment(args)
    status = experiment_status(spec)
    if args.output == "json":
        _print_json(status)
        return 0
    console = _console(args)
    console.print(_status_table(status))
    for r in status["steps"]:
        if r["stale"]:
            console.print(f"[yellow]{r['name']} is stale[/]: " + ("; ".join(r["changes"]) or "changed"))
    if status["holds_earlier_results"]:
        console.print(
            "the results above are the current spec's; the store also holds results of an earlier spec "
            "(other fingerprints, kept as they were)"
        )
    console.print(f"artifacts: {status['store']}/")
    return 0 if status["phase"] != "Failed" else EXIT_FAILED


def _list_local_runs(args: argparse.Namespace) -> int:
    """``coe-ctl status --store URI`` without an experiment: the names of the runs saved there."""
    from coe_controller.local import list_experiments

    from coe_runtime.store import normalize_uri

    names = list_experiments(normalize_uri(args.store))
    if args.output == "json":
        _print_json({"store": args.store, "experiments": names})
    else:
        print("\n".join(names) if names else f"no local runs in {args.store}")
    return 0


def _status_table(status: dict[str, Any]) -> Any:
    from rich.table import Table

    colours = {
        "succeeded": "green",
        "running": "cyan",
        "failed": "red",
        "interrupted": "yellow",
        "tentative": "dim",
    }
    t = Table(title=f"{status['experiment']}: {status['phase']}", title_justify="left")
    for col in ("step", "kind", "state", "attempts", "duration", "result"):
        t.add_column(col)
    for r in status["steps"]:
        c = colours.get(r["state"], "white")
        dur = f"{r['duration_s']:.1f}s" if r["duration_s"] is not None else "-"
        t.add_row(r["name"], r["kind"], f"[{c}]{r['state']}[/]", str(r["attempts"]), dur, r["metric"] or "")
    return t


# -- logs --------------------------------------------------------------------------------------


def cmd_logs(args: argparse.Namespace) -> int:
    from coe_controller.local import step_log

    if args.spec:
        from coe_controller.spec import load_spec

        spec = load_spec(args.spec)
    elif args.store and args.experiment:
        from coe_controller.local import find_experiment

        from coe_runtime.store import normalize_uri

        spec = find_experiment(normalize_uri(args.store), args.experiment)
    else:
        raise ConfigError("logs needs --spec SPEC (or --store URI with --experiment NAME)")
    found = step_log(spec, args.step)
    if found is None:
        raise ConfigError(
            f"step {args.step!r} of {spec.name} has not run (no run record); see coe-ctl status"
        )
    uri, text = found
    lines = text.splitlines()
    if args.tail:
        lines = lines[-args.tail :]
    print(f"# {uri}", file=sys.stderr)
    sys.stdout.write("\n".join(lines) + ("\n" if lines else ""))
    return 0


# -- registration ------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    def add(name: str, help_: str, func: Any, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description, epilog=EXIT_CODES)
        p.set_defaults(func=func)
        return p

    def output(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")

    p = add(
        "validate",
        "check a CoEExperiment spec",
        cmd_validate,
        "Validate a CoEExperiment YAML file; every problem is listed by field path.",
    )
    p.add_argument("spec", metavar="SPEC", help="CoEExperiment YAML file")
    output(p)

    p = add(
        "plan",
        "show the steps a spec runs",
        cmd_plan,
        "Print the curriculum's steps in run order: what each reads, which adapter it starts from, "
        "where it runs. Steps after an undecided STEeR round are marked tentative.",
    )
    p.add_argument("spec", metavar="SPEC", help="CoEExperiment YAML file")
    p.add_argument(
        "--no-store",
        action="store_true",
        help="plan without reading the store (default: read it, and say which steps a run reuses, "
        "which are stale and why, which run)",
    )
    p.add_argument("--observe", action="store_true", help=argparse.SUPPRESS)  # the default now
    output(p)

    p = add(
        "run",
        "run an experiment on this machine",
        cmd_run,
        "Run every step of a spec locally, one subprocess per step (torchrun when nprocPerNode > 1). "
        "Steps already published in the store are skipped, so running it again resumes after a crash or Ctrl-C.",
    )
    p.add_argument("spec", metavar="SPEC", help="CoEExperiment YAML file")
    output(p)

    p = add(
        "status",
        "where an experiment stands",
        cmd_status,
        "Show each step's state, attempts, duration and result. A SPEC file (or EXPERIMENT with --store) "
        "reads a local run from its store; a bare EXPERIMENT name asks the Kubernetes cluster.",
    )
    p.add_argument("target", nargs="?", metavar="SPEC|EXPERIMENT", help="spec file or experiment name")
    p.add_argument(
        "--store", help="artifact store URI of a local run (file://PATH, PATH or s3://bucket/prefix)"
    )
    p.add_argument("-n", "--namespace", default=None, help="namespace (cluster experiments)")
    p.add_argument("-w", "--watch", action="store_true", help="keep watching (cluster experiments)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (cluster experiments)")
    p.add_argument("--context", default=None, help="kubeconfig context (cluster experiments)")
    output(p)

    p = add(
        "logs",
        "print a step's log",
        cmd_logs,
        "Print the log of a step's latest local attempt (kept in <store>/<experiment>/_runs/<step>/).",
    )
    p.add_argument("step", metavar="STEP", help="step name, e.g. erc or steer-r1-train")
    p.add_argument("--spec", help="CoEExperiment YAML file of the run")
    p.add_argument("--store", help="artifact store URI (with --experiment, instead of --spec)")
    p.add_argument("--experiment", help="experiment name (with --store)")
    p.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
