"""manifests/ and the chart's copies: CRD equality, generated files up to date, kustomize build valid,
RBAC = the controller's declared rules, and the example experiments valid and plannable."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.packaging import packaging_support as ps
from tests.packaging import packaging_sync as sync

EXAMPLES = sorted((ps.REPO / "manifests" / "examples").glob("*.yaml"))


def test_chart_crd_equals_manifests_crd():
    ps.require_crd()
    sources = sync.crd_sources()
    copies = sorted((ps.CHART / "crds").glob("*.yaml"))
    assert [p.name for p in copies] == [p.name for p in sources]
    for src, copy_ in zip(sources, copies, strict=True):
        assert copy_.read_bytes() == src.read_bytes(), f"{copy_} differs from {src}: run packaging_sync"


def test_chart_crd_is_the_generated_schema():
    """The CRD Helm installs is what coe_controller.crd generates from the pydantic spec right now."""
    from coe_controller import crd

    ps.require_crd()
    in_chart = yaml.safe_load((ps.CHART / "crds" / ps.CRD_FILE.name).read_text())
    assert in_chart == crd.crd()
    assert in_chart["spec"]["names"]["shortNames"] == ["coex"]
    assert in_chart["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_generated_files_are_up_to_date():
    ps.require_helm()
    ps.require_crd()
    stale = [str(p.relative_to(ps.REPO)) for p in sync.stale_files()]
    assert not stale, f"out of date (run `python -m tests.packaging.packaging_sync`): {stale}"


@pytest.fixture(scope="module")
def kustomize_build() -> str:
    kubectl = ps.require_tool("kubectl", "python tests/tools/install_helm.py --dest .venv/bin")
    ps.require_crd()
    result = subprocess.run(
        [kubectl, "kustomize", str(ps.REPO / "manifests")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kustomize_build_is_the_whole_install_and_valid(kustomize_build):
    docs = ps.documents(kustomize_build)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["Namespace", "CustomResourceDefinition", "ServiceAccount", "Role", "RoleBinding", "Deployment"]
    )
    for d in docs:
        if d["kind"] not in ("Namespace", "CustomResourceDefinition"):
            assert d["metadata"]["namespace"] == "coe", d["metadata"]
    ps.assert_valid_core_kinds(kustomize_build)


def test_plain_manifests_carry_no_helm_labels(kustomize_build):
    for labels in _all_labels(ps.documents(kustomize_build)):
        assert not set(labels) & set(sync.HELM_ONLY_LABELS), labels


def _all_labels(docs):
    for d in docs:
        yield d["metadata"].get("labels") or {}
        template = d.get("spec", {}).get("template")
        if isinstance(template, dict):
            yield template.get("metadata", {}).get("labels") or {}


def test_plain_rbac_is_exactly_the_controllers_declared_rules(kustomize_build):
    from coe_controller import rbac

    (role,) = ps.by_kind(ps.documents(kustomize_build), "Role")
    assert ps.rule_grants(role["rules"]) == ps.rule_grants(rbac.rules())


def test_rule_comparison_sees_one_extra_or_missing_verb():
    """The equality above is only as good as rule_grants: one verb more or less must change it."""
    from coe_controller import rbac

    rules = rbac.rules()
    more = copy.deepcopy(rules)
    more[0]["verbs"].append("delete")
    fewer = copy.deepcopy(rules)
    fewer[-1]["verbs"].pop()
    assert ps.rule_grants(more) != ps.rule_grants(rules) != ps.rule_grants(fewer)


def test_example_s3_secret_holds_placeholders_only():
    secret = yaml.safe_load((ps.REPO / "manifests" / "s3-secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    data = secret["stringData"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(data)
    assert data["AWS_ACCESS_KEY_ID"].startswith("REPLACE_") and data["AWS_SECRET_ACCESS_KEY"].startswith(
        "REPLACE_"
    )
    ps.assert_valid_core_kinds(yaml.safe_dump(secret))
    # the name the chart and the MELD example expect by default
    values = yaml.safe_load((ps.CHART / "values.yaml").read_text())
    assert secret["metadata"]["name"] == values["s3"]["existingSecret"]


def test_there_are_example_experiments():
    names = {p.name for p in EXAMPLES}
    assert "meld-mistral7b.yaml" in names, names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates_against_the_crd_and_plans(path: Path):
    from coe_controller.planner import plan
    from coe_controller.spec import parse_spec

    crd = ps.require_crd()
    obj = yaml.safe_load(path.read_text())
    assert obj["apiVersion"] == "coe.ml/v1alpha1" and obj["kind"] == "CoEExperiment"
    errors = ps.validate_against_crd(obj, crd)
    assert not errors, f"{path.name} does not validate against the CRD:\n" + "\n".join(errors)
    steps = plan(parse_spec(obj, source=str(path)))
    assert steps, f"{path.name} plans no steps"
    names = [s.name for s in steps]
    assert len(names) == len(set(names)), names
    assert all(need in names for s in steps for need in s.needs)  # the DAG is closed


def test_crd_validation_rejects_a_broken_experiment():
    """Guard against a schema that accepts everything: a typo and a wrong type must both be reported.
    The typo as the apiserver reports it: a structural schema has no additionalProperties: false, pruning
    drops the field and kubectl's strict field validation names it (tests/support/apiserver_crd.py)."""
    from tests.support.apiserver_crd import unknown_fields

    crd = ps.require_crd()
    obj = yaml.safe_load((ps.REPO / "manifests" / "examples" / "meld-mistral7b.yaml").read_text())
    obj["spec"]["stratgy"] = "mixed_auxiliary"
    obj["spec"]["steer"]["rounds"] = "three"
    errors = "\n".join(ps.validate_against_crd(obj, crd) + unknown_fields(obj, ps.crd_schema(crd)))
    assert "stratgy" in errors and "spec.steer.rounds" in errors


def _docs_rbac_table(text: str) -> set[tuple[str, str, tuple[str, ...]]]:
    """The rows of the "API group | resource | verbs" table in docs/cluster.md."""
    rows = set()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| API group | resource | verbs |"))
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        group, resource, verbs = (c.strip().strip("`") for c in line.strip("|").split("|"))
        rows.add(("" if group == "core" else group, resource, tuple(v.strip() for v in verbs.split(","))))
    return rows


def test_cluster_guide_lists_exactly_the_declared_controller_rbac():
    from coe_controller import rbac

    documented = _docs_rbac_table((ps.REPO / "docs" / "cluster.md").read_text())
    declared = {(p.api_group, p.resource, p.verbs) for p in rbac.CONTROLLER_PERMISSIONS}
    assert documented == declared, f"docs only: {documented - declared}; code only: {declared - documented}"
