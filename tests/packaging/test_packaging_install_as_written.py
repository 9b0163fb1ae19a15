"""The install commands of README.md and docs/cluster.md, followed literally, give a controller that starts:
every object validates (kubernetes-validate, strict), and every Secret / ConfigMap / ServiceAccount the
Deployment needs is rendered, created by a documented command, or marked optional."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.packaging import packaging_support as ps
from tests.packaging.packaging_sync import helm_template


def _shell_blocks(text: str) -> list[list[str]]:
    """The commands of every ```bash block: continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        out.append([shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()])
    return [[c for c in cmds if c] for cmds in out]


def _install_paths(doc: str) -> list[list[list[str]]]:
    """The blocks of ``doc`` that run ``helm install``."""
    text = (ps.REPO / doc).read_text()
    return [cmds for cmds in _shell_blocks(text) if any(c[:2] == ["helm", "install"] for c in cmds)]


def _helm_install_args(cmd: list[str]) -> tuple[str, str, tuple[str, ...]]:
    release, chart, *rest = cmd[2:]
    assert chart == "charts/coe-controller", cmd
    namespace, sets, i = "default", [], 0
    while i < len(rest):
        if rest[i] in ("-n", "--namespace"):
            namespace, i = rest[i + 1], i + 2
        elif rest[i] == "--set":
            sets.append(rest[i + 1])
            i += 2
        elif rest[i] in ("--create-namespace", "--wait"):
            i += 1
        else:
            raise AssertionError(f"unexpected helm install argument {rest[i]!r} in {cmd}")
    return release, namespace, tuple(sets)


def _created_secrets(cmds: list[list[str]]) -> set[str]:
    """Secrets the documented commands create: ``kubectl [-n ns] create secret generic NAME``."""
    names = set()
    for c in cmds:
        if c[:1] == ["kubectl"] and "create" in c and "secret" in c:
            after = c[c.index("secret") + 1 :]
            names.add(after[1])
    return names


def _needs(pod: dict) -> list[tuple[str, str, bool]]:
    """(kind, name, optional) for everything the pod refers to by name."""
    out = [("ServiceAccount", pod.get("serviceAccountName") or "default", False)]
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        for e in c.get("envFrom") or []:
            for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if key in e:
                    out.append((kind, e[key]["name"], bool(e[key].get("optional"))))
        for e in c.get("env") or []:
            for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                ref = (e.get("valueFrom") or {}).get(key)
                if ref:
                    out.append((kind, ref["name"], bool(ref.get("optional"))))
    for v in pod.get("volumes") or []:
        if "secret" in v:
            out.append(("Secret", v["secret"]["secretName"], bool(v["secret"].get("optional"))))
        if "configMap" in v:
            out.append(("ConfigMap", v["configMap"]["name"], bool(v["configMap"].get("optional"))))
    return out


def _check_starts(text: str, namespace: str, created_secrets: set[str]) -> dict:
    ps.assert_valid_core_kinds(text)
    docs = ps.documents(text)
    present = {(d["kind"], d["metadata"]["name"]) for d in docs}
    present |= {("Secret", n) for n in created_secrets}
    (dep,) = ps.by_kind(docs, "Deployment")
    assert dep["metadata"]["namespace"] == namespace
    missing = [
        (kind, name)
        for kind, name, optional in _needs(dep["spec"]["template"]["spec"])
        if not optional and (kind, name) not in present
    ]
    assert not missing, f"the controller pod would wait for {missing}"
    return dep


@pytest.mark.parametrize("doc", ["README.md", "docs/cluster.md"])
def test_documented_install_yields_a_controller_that_starts(doc):
    ps.require_helm()
    paths = _install_paths(doc)
    assert paths, f"{doc} has no helm install block"
    for cmds in paths:
        created = _created_secrets(cmds)
        for cmd in (c for c in cmds if c[:2] == ["helm", "install"]):
            release, namespace, sets = _helm_install_args(cmd)
            _check_starts(
                helm_template(release=release, namespace=namespace, set_values=sets), namespace, created
            )


def test_chart_can_create_the_s3_secret_from_values():
    ps.require_helm()
    text = helm_template(
        release="coe",
        namespace="ml",
        set_values=(
            "s3.create=true",
            "s3.accessKeyId=AKIAEXAMPLE",
            "s3.secretAccessKey=example-secret",
            "s3.endpoint=http://minio.storage.svc:9000",
        ),
    )
    dep = _check_starts(text, "ml", set())
    (secret,) = ps.by_kind(ps.documents(text), "Secret")
    assert secret["metadata"]["name"] == "coe-coe-controller-s3"
    assert secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "example-secret",
        "AWS_ENDPOINT_URL": "http://minio.storage.svc:9000",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "coe-coe-controller-s3"}}]  # rendered: not optional
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["COE_S3_SECRET"] == "coe-coe-controller-s3"


def test_an_existing_secret_is_optional_so_the_controller_starts_before_it_exists():
    ps.require_helm()
    text = helm_template(release="coe", namespace="ml", set_values=("s3.existingSecret=team-s3",))
    dep = _check_starts(text, "ml", set())
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "team-s3", "optional": True}}]
    assert not ps.by_kind(ps.documents(text), "Secret")


def test_policy_values_reach_the_controller():
    ps.require_helm()
    text = helm_template(ps.ALL_OPTIONS_VALUES, release="coe", namespace="ml")
    (dep,) = ps.by_kind(ps.documents(text), "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["COE_ALLOWED_IMAGES"] == "registry.example.com/ml/*"
    assert env["COE_ALLOWED_SERVICE_ACCOUNTS"] == "coe-runner,default"
    assert env["COE_ALLOWED_SECRETS"] == "minio-coe,hf-*"
    from coe_controller import policy

    p = policy.from_env(env)
    assert p.allows_image("registry.example.com/ml/coe-runtime:0.1.0-rc1-cu130")
    assert not p.allows_secret("someone-elses") and p.allows_secret("hf-token")
    default = helm_template(release="coe", namespace="ml")
    assert "COE_ALLOWED_" not in default
