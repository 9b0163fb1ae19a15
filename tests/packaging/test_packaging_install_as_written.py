"""The install commands of README.md and docs/cluster.md, followed literally, give a controller that starts:
every object validates (kubernetes-validate, strict), and every Secret / ConfigMap / ServiceAccount the
Deployment needs is rendered, created by a documented command, or marked optional.

The rest of docs/cluster.md is held to the code the same way: its chart values table names real values with
their defaults, its values and spec snippets render, its coe-ctl commands parse with coe-ctl's own parser,
and every repository path and in-page link it names exists."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from tests.packaging import packaging_support as ps
from tests.packaging.packaging_sync import helm_template


def _shell_blocks(text: str) -> list[list[str]]:
    """The commands of every ```bash block: continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        out.append([shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()])
    return [[c for c in cmds if c] for cmds in out]


def _is_helm_install(cmd: list[str]) -> bool:
    """``helm install …`` or ``helm upgrade --install …``."""
    return cmd[:2] == ["helm", "install"] or (cmd[:2] == ["helm", "upgrade"] and "--install" in cmd)


def _install_paths(doc: str) -> list[list[list[str]]]:
    """The blocks of ``doc`` that run ``helm install`` (or ``helm upgrade --install``)."""
    text = (ps.REPO / doc).read_text()
    return [cmds for cmds in _shell_blocks(text) if any(_is_helm_install(c) for c in cmds)]


def _helm_install_args(cmd: list[str]) -> tuple[str, str, tuple[str, ...]]:
    release, chart, *rest = [a for a in cmd[2:] if a != "--install"]
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
        for cmd in (c for c in cmds if _is_helm_install(c)):
            release, namespace, sets = _helm_install_args(cmd)
            dep = _check_starts(
                helm_template(release=release, namespace=namespace, set_values=sets), namespace, created
            )
            env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
            for s in sets:
                if s.startswith("jobApis="):  # --set 'jobApis={TrainJob}': what the controller watches
                    assert env["COE_JOB_APIS"] == s.partition("=")[2].strip("{}"), cmd


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


# -- the rest of docs/cluster.md ---------------------------------------------------------------------------
CLUSTER_DOC = ps.REPO / "docs" / "cluster.md"


def _yaml_blocks(text: str) -> list[dict]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S)]


def _values_table(text: str) -> list[tuple[list[str], list[str]]]:
    """(value keys, defaults) of each row of the "value | default | meaning" table."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| value | default | meaning |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        key_cell, default_cell, _ = (c.strip() for c in line.strip().strip("|").split("|"))
        keys: list[str] = []
        for k in re.findall(r"`([^`]+)`", key_cell):
            keys.append(keys[-1].rsplit(".", 1)[0] + k if k.startswith(".") else k)  # `a.b` / `.c`
        rows.append((keys, re.findall(r"`([^`]*)`", default_cell)))
    return rows


def _lookup(values: dict, key: str):
    node = values
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, (
            f"docs/cluster.md names chart value {key!r}: not in values.yaml"
        )
        node = node[part]
    return node


def test_the_values_table_names_real_values_with_their_defaults():
    values = yaml.safe_load((ps.CHART / "values.yaml").read_text())
    rows = _values_table(CLUSTER_DOC.read_text())
    assert rows
    for keys, defaults in rows:
        for key in keys:
            _lookup(values, key[: -len(".*")] if key.endswith(".*") else key)
        if defaults:
            assert len(defaults) in (1, len(keys)), (keys, defaults)
            for key, default in zip(
                keys, defaults * len(keys) if len(defaults) == 1 else defaults, strict=True
            ):
                assert _lookup(values, key) == yaml.safe_load(default), f"{key}: documented default {default}"


def test_the_documented_policy_values_render(tmp_path):
    ps.require_helm()
    (block,) = [b for b in _yaml_blocks(CLUSTER_DOC.read_text()) if set(b) == {"policy"}]
    values = tmp_path / "policy.yaml"
    values.write_text(yaml.safe_dump(block))
    (dep,) = ps.by_kind(
        ps.documents(helm_template(values, release="coe-controller", namespace="coe")), "Deployment"
    )
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    for key, var in (
        ("allowedImages", "COE_ALLOWED_IMAGES"),
        ("allowedServiceAccounts", "COE_ALLOWED_SERVICE_ACCOUNTS"),
        ("allowedSecrets", "COE_ALLOWED_SECRETS"),
    ):
        assert env[var] == ",".join(block["policy"][key])


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_the_documented_spec_snippets_validate_and_render(tmp_path):
    """Each ``spec:`` snippet, put into the MELD example, is a valid experiment whose pods get it."""
    from coe_controller.cli_cluster import render_spec

    base = yaml.safe_load((ps.REPO / "manifests" / "examples" / "meld-mistral7b.yaml").read_text())
    snippets = [b for b in _yaml_blocks(CLUSTER_DOC.read_text()) if set(b) == {"spec"}]
    assert snippets
    for i, snippet in enumerate(snippets):
        path = tmp_path / f"snippet-{i}.yaml"
        path.write_text(yaml.safe_dump(_merged(base, snippet)))
        objs = render_spec(str(path))
        pods = [
            spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
            for spec in (o["spec"] for o in objs if o["kind"] == "PyTorchJob")
        ]
        assert pods
        for mount in snippet["spec"].get("resources", {}).get("volumeMounts", []):
            for pod in pods:
                assert mount in pod["containers"][0]["volumeMounts"]
                assert mount["name"] in {v["name"] for v in pod["volumes"]}


def _coe_ctl_commands(text: str) -> list[list[str]]:
    """The coe-ctl commands of the bash blocks, up to a pipe or redirection."""
    out = []
    for cmds in _shell_blocks(text):
        for c in cmds:
            if c[:1] == ["coe-ctl"]:
                end = next((i for i, a in enumerate(c) if a in ("|", ">", ">>", "&&", ";")), len(c))
                out.append(c[1:end])
    return out


def test_the_documented_coe_ctl_commands_parse():
    from coe_controller.cli import build_parser

    commands = _coe_ctl_commands(CLUSTER_DOC.read_text())
    assert len(commands) >= 5
    for argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            raise AssertionError(f"coe-ctl {' '.join(argv)}: coe-ctl refuses it") from e


_REPO_PATH = re.compile(r"(?<![\w/.])((?:charts|manifests|images|controller|coe_runtime|tests)/[\w./{},-]*)")


def _expand(path: str) -> list[str]:
    m = re.search(r"\{([^}]*)\}", path)
    if not m:
        return [path]
    return [p for alt in m.group(1).split(",") for p in _expand(path[: m.start()] + alt + path[m.end() :])]


def test_every_repository_path_the_guide_names_exists():
    text = CLUSTER_DOC.read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)  # inline code spans, then the bash blocks whole
    spans = re.findall(r"`([^`]+)`", prose) + re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    named = {p.rstrip(".,") for span in spans for p in _REPO_PATH.findall(span)}
    assert named
    missing = sorted(p for p in named for q in _expand(p) if not (ps.REPO / q).exists())
    assert not missing, f"docs/cluster.md names paths that do not exist: {missing}"


def test_every_link_of_the_guide_resolves():
    text = CLUSTER_DOC.read_text()
    headings = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        page, _, anchor = target.partition("#")
        if page:
            assert (CLUSTER_DOC.parent / page).is_file(), target
        elif anchor:
            assert anchor in anchors, f"no heading for #{anchor}"
