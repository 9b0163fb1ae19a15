"""``coe-ctl`` commands for Kubernetes: submit, delete, render, operator, crd, and the cluster side of
``status`` (:func:`cluster_status`, dispatched to by the local ``status`` command for a bare name).

Cluster access comes from ``--kubeconfig``/``--context``, else in-cluster config, else $KUBECONFIG /
~/.kube/config. API trouble exits 3 (unreachable), a missing experiment or a bad spec exits 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

import yaml
from coe_controller.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNREACHABLE
from coe_controller.kube import Kube, KubeError, NotFound, Unreachable, load_api_client

if TYPE_CHECKING:
    from coe_controller.render import ClusterDefaults


def _kube(args, role: str = "user") -> Kube:
    return Kube(load_api_client(getattr(args, "kubeconfig", None), getattr(args, "context", None)), role=role)


def _namespace(args) -> str:
    if getattr(args, "namespace", None):
        return args.namespace
    try:
        from kubernetes import config

        _contexts, active = config.list_kube_config_contexts(config_file=getattr(args, "kubeconfig", None))
        return (active or {}).get("context", {}).get("namespace") or "default"
    except Exception:  # no kubeconfig (in-cluster): the default namespace
        return "default"


def _api_error(e: KubeError) -> int:
    print(f"error: {e}", file=sys.stderr)
    return EXIT_UNREACHABLE if isinstance(e, Unreachable) or not e.status else EXIT_BAD_INPUT


# -- submit / delete -----------------------------------------------------------------------------------
def cmd_submit(args) -> int:
    from coe_controller.spec import load_spec

    spec = load_spec(args.spec, resolve=False)  # validates: every problem by field path
    # Only what the file sets, like `kubectl apply`: a model default written into the object would
    # look "set" to the controller and override the installation's defaults (runtime image, Secret).
    body = spec.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)
    ns = args.namespace or spec.metadata.namespace or _namespace(args)
    body["metadata"] = {k: v for k, v in body["metadata"].items() if k in ("name", "labels") and v}
    body["metadata"]["namespace"] = ns
    if spec.spec.store.startswith("file://"):
        print(
            f"warning: store {spec.spec.store} is a local path; pods on a cluster need an s3:// store",
            file=sys.stderr,
        )
    try:
        _kube(args).create_experiment(ns, body)
    except KubeError as e:
        if e.status == 409:
            print(f"error: coeexperiment {ns}/{spec.name} exists already; delete it first", file=sys.stderr)
            return EXIT_BAD_INPUT
        return _api_error(e)
    print(
        f"coeexperiment {ns}/{spec.name} created; follow it with: coe-ctl status {spec.name} -n {ns} --watch"
    )
    return 0


def cmd_delete(args) -> int:
    ns = _namespace(args)
    try:
        _kube(args).delete_experiment(ns, args.name)
    except NotFound:
        print(f"error: coeexperiment {ns}/{args.name} not found", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KubeError as e:
        return _api_error(e)
    print(f"coeexperiment {ns}/{args.name} deleted (its jobs and config maps go with it)")
    return 0


# -- render / crd --------------------------------------------------------------------------------------
def cluster_defaults(args) -> ClusterDefaults:
    """The runtime image / S3 Secret for experiments that name none: the command line, else
    ``COE_RUNTIME_IMAGE`` / ``COE_S3_SECRET`` (what the Helm chart sets on the controller)."""
    from coe_controller.operator import defaults_from_env
    from coe_controller.render import ClusterDefaults

    env = defaults_from_env()
    return ClusterDefaults(
        image=getattr(args, "runtime_image", None) or env.image,
        s3_secret=getattr(args, "s3_secret", None) or env.s3_secret,
        policy=env.policy,
    )


def render_spec(path: str, namespace: str | None = None, defaults=None) -> list[dict]:
    """Every object the controller would create for a spec's current plan (attempt 1 of each step);
    ``defaults`` (a ``render.ClusterDefaults``) fills in an image / S3 Secret the spec leaves out."""
    from coe_controller import render
    from coe_controller.planner import plan
    from coe_controller.spec import load_spec

    spec = load_spec(path)
    owner = render.Owner(spec.name, namespace or spec.metadata.namespace or "default")
    objs: list[dict] = []
    r = render.renderer(spec.spec.resources.job_api)  # PyTorchJobs, or TrainJobs (resources.jobApi)
    for step in plan(spec):
        objs.extend(r.render(owner, step, 1, render.settings_from(step.resources, defaults)))
    return objs


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the frozen step.json) as readable literal blocks."""


_BlockDumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def cmd_render(args) -> int:
    objs = render_spec(args.spec, args.namespace, cluster_defaults(args))
    sys.stdout.write(yaml.dump_all(objs, Dumper=_BlockDumper, sort_keys=False, width=120))
    return 0


def cmd_crd(args) -> int:
    from coe_controller.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


# -- operator ------------------------------------------------------------------------------------------
# The controller's store calls, unless the installation says otherwise: a hung S3 call must end well
# inside the liveness window (3 x resync, at least 60 s): 3 attempts of at most 5 s + 10 s each.
CONTROLLER_STORE_SETTINGS = {
    "COE_S3_CONNECT_TIMEOUT_S": "5",
    "COE_S3_READ_TIMEOUT_S": "10",
    "AWS_MAX_ATTEMPTS": "3",
}


def controller_store_timeouts(environ=None) -> None:
    """Short store timeouts for the controller's own process (pods keep the runtime's longer ones)."""
    env = os.environ if environ is None else environ
    for key, value in CONTROLLER_STORE_SETTINGS.items():
        env.setdefault(key, value)


def cmd_operator(args) -> int:
    from coe_controller.operator import Operator

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    namespace = None if args.all_namespaces else (args.namespace or _namespace(args))
    controller_store_timeouts()
    try:
        op = Operator(
            _kube(args, role="controller"),
            namespace,
            leader_elect=args.leader_elect,
            lease_namespace=args.lease_namespace,
            resync_s=args.resync,
            retry_backoff_s=args.retry_backoff,
            defaults=cluster_defaults(args),
        )
    except KubeError as e:
        return _api_error(e)
    if args.once:
        op.run_once()
        return 0
    op.run(health_port=args.health_port or None)
    return 0


# -- status --------------------------------------------------------------------------------------------
def _duration(start: str | None, finish: str | None) -> str:
    from coe_controller.reconcile import parse_iso

    a = parse_iso(start)
    if a is None:
        return ""
    b = parse_iso(finish) or time.time()
    secs = int(max(b - a, 0))
    return f"{secs // 3600}h{secs // 60 % 60:02d}m" if secs >= 3600 else f"{secs // 60}m{secs % 60:02d}s"


def _metrics_text(metrics: dict) -> str:
    keys = [
        k for k in metrics if "f1" in k.lower() or k in ("accepted", "memory_size", "pool_size", "continue")
    ]
    return ", ".join(f"{k}={metrics[k]}" for k in (keys or list(metrics))[:4])


def failing_logs(kube: Kube, namespace: str, status: dict, lines: int = 20) -> dict[str, str]:
    """The last log lines of every failed or retrying step's latest job, from the pod whose failure
    ended it (in a multi-node job the others were only stopped after it)."""
    from coe_controller.reconcile import failing_pod
    from coe_controller.render import LABEL_JOB

    out: dict[str, str] = {}
    for step in status.get("steps") or []:
        if step.get("state") not in ("Failed", "Backoff") or not step.get("jobName"):
            continue
        try:
            pod = failing_pod(kube.list_pods(namespace, f"{LABEL_JOB}={step['jobName']}"))
            if pod is not None:
                name = pod["metadata"]["name"]
                out[step["name"]] = f"(pod {name})\n" + kube.read_pod_log(namespace, name, tail_lines=lines)
        except KubeError as e:
            out[step["name"]] = f"(logs unavailable: {e})"
    return out


def render_status(obj: dict, logs: dict[str, str]):
    """A rich renderable: the phase line, the step table, and failing steps' log tails."""
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    status = obj.get("status") or {}
    meta = obj["metadata"]
    phase = status.get("phase", "Pending")
    color = {"Succeeded": "green", "Failed": "red", "Running": "cyan"}.get(phase, "yellow")
    head = Text.assemble(
        (f"{meta.get('namespace')}/{meta['name']}  ", "bold"),
        (phase, f"bold {color}"),
        f"  {status.get('message', '')}",
    )
    table = Table(box=None, pad_edge=False)
    for col in ("STEP", "STATE", "ATTEMPTS", "JOB", "DURATION", "METRICS"):
        table.add_column(col)
    for s in status.get("steps") or []:
        st = s.get("state", "")
        style = {"Succeeded": "green", "Failed": "red", "Backoff": "red", "Running": "cyan"}.get(st, "")
        table.add_row(
            s.get("name", ""),
            Text(st, style=style),
            str(s.get("attempts", 0)),
            s.get("jobName", ""),
            _duration(s.get("startTime"), s.get("finishTime")),
            _metrics_text(s.get("metrics") or {}),
        )
    parts: list[RenderableType] = [head, table]
    for s in status.get("steps") or []:
        # Why a step waits or failed, as the controller saw it: a pod's waiting reason
        # (ImagePullBackOff, CreateContainerConfigError, Unschedulable), restarts, exit codes.
        if s.get("reason") and s.get("state") not in ("Succeeded",):
            parts.append(Text(f"{s.get('name')}: {s['reason']}: {s.get('message', '')}", style="yellow"))
    best = status.get("bestMetrics") or {}
    if best:
        parts.append(Text("best: " + ", ".join(f"{k}={v:.4f}" for k, v in best.items())))
    if status.get("artifacts"):
        last = list(status["artifacts"].items())[-1]
        parts.append(Text(f"artifacts: {last[1]} (and {len(status['artifacts']) - 1} more)"))
    for step, text in logs.items():
        parts.append(Text(f"--- last log lines of {step} ---", style="bold red"))
        parts.append(Text(text.rstrip()))
    return Group(*parts)


def _list_table(items: list[dict]):
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("NAME", "PHASE", "STEP", "ROUND", "DEV-WF1"):
        table.add_column(col)
    for obj in items:
        st = obj.get("status") or {}
        f1 = st.get("bestDevWeightedF1")
        table.add_row(
            obj["metadata"]["name"],
            st.get("phase", "Pending"),
            st.get("currentStep", ""),
            str(st.get("steerRound", "")),
            f"{f1:.4f}" if isinstance(f1, int | float) else "",
        )
    return table


def cluster_status(args) -> int:
    """``coe-ctl status [NAME] [-n NS] [--watch] [--output json]`` against the cluster."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    ns = _namespace(args)
    name = getattr(args, "target", None) or getattr(args, "name", None)
    as_json = getattr(args, "output", None) == "json"
    try:
        kube = _kube(args)
        if not name:
            items = kube.list_experiments(ns)
            if as_json:
                print(
                    json.dumps(
                        [{"name": i["metadata"]["name"], **(i.get("status") or {})} for i in items], indent=2
                    )
                )
            else:
                console.print(_list_table(items) if items else f"no CoEExperiments in namespace {ns}")
            return 0

        def snapshot():
            obj = kube.get_experiment(ns, name)
            return obj, failing_logs(kube, ns, obj.get("status") or {})

        obj, logs = snapshot()
        if as_json:
            print(
                json.dumps(
                    {"name": name, "namespace": ns, **(obj.get("status") or {}), "logs": logs}, indent=2
                )
            )
        elif getattr(args, "watch", False):
            with Live(render_status(obj, logs), console=console, refresh_per_second=2) as live:
                while (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    time.sleep(2.0)
                    obj, logs = snapshot()
                    live.update(render_status(obj, logs))
        else:
            console.print(render_status(obj, logs))
    except NotFound:
        print(f"error: coeexperiment {ns}/{name} not found", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KubeError as e:
        return _api_error(e)
    return EXIT_FAILED if (obj.get("status") or {}).get("phase") == "Failed" else 0


# -- registration --------------------------------------------------------------------------------------
def _cluster_args(p: argparse.ArgumentParser, namespace: bool = True) -> None:
    if namespace:
        p.add_argument(
            "-n", "--namespace", help="namespace (default: the kubeconfig context's, else default)"
        )
    p.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, else $KUBECONFIG or ~/.kube/config)"
    )
    p.add_argument("--context", help="kubeconfig context")


def _default_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtime-image",
        help="runtime image for experiments without spec.resources.image (default: $COE_RUNTIME_IMAGE)",
    )
    p.add_argument(
        "--s3-secret",
        help="S3 Secret for experiments without spec.resources.s3CredentialsSecret (default: $COE_S3_SECRET)",
    )


def register(sub) -> None:
    p = sub.add_parser(
        "submit",
        help="create a CoEExperiment on the cluster",
        description="Validate SPEC and create it as a CoEExperiment; the controller then runs it as PyTorchJobs.",
    )
    p.add_argument("spec", metavar="SPEC", help="CoEExperiment YAML file")
    _cluster_args(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "delete",
        help="delete a CoEExperiment (its jobs go with it)",
        description="Delete a CoEExperiment; its PyTorchJobs and ConfigMaps are garbage-collected by ownerReferences. "
        "Artifacts in the store are kept.",
    )
    p.add_argument("name", metavar="NAME")
    _cluster_args(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser(
        "render",
        help="print the Kubernetes objects of every step (no cluster needed)",
        description="Print, as YAML, the ConfigMap and PyTorchJob the controller creates for each planned step "
        "(first attempt; STEeR rounds planned as if every round continues).",
    )
    p.add_argument("spec", metavar="SPEC", help="CoEExperiment YAML file")
    p.add_argument("-n", "--namespace", help="namespace to render into (default: the spec's, else default)")
    _default_args(p)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser(
        "operator",
        help="run the Kubernetes controller",
        description="Reconcile CoEExperiments into PyTorchJobs (watches + periodic resync), serving /healthz and "
        "/readyz on --health-port.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", help="watch this namespace (default: the kubeconfig context's)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument("--leader-elect", action="store_true", help="hold a Lease so only one replica acts")
    p.add_argument(
        "--lease-namespace", help="namespace of the Lease (default: $POD_NAMESPACE or --namespace)"
    )
    p.add_argument("--health-port", type=int, default=8081, help="port of /healthz and /readyz (0: off)")
    p.add_argument("--resync", type=float, default=30.0, help="seconds between full passes without events")
    p.add_argument(
        "--retry-backoff",
        type=float,
        default=10.0,
        help="seconds before retrying a failed step (doubles per attempt)",
    )
    p.add_argument("--once", action="store_true", help="one pass over every experiment, then exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _default_args(p)
    _cluster_args(p, namespace=False)
    p.set_defaults(func=cmd_operator)

    p = sub.add_parser(
        "crd",
        help="print the CoEExperiment CRD",
        description="Print the CustomResourceDefinition generated from the spec model (apply with --server-side).",
    )
    p.set_defaults(func=cmd_crd)
