"""Every CRD we ship passes kube-apiserver's CRD validation (tests/support/apiserver_crd.py), and that
checker can fail: one small known-bad CRD per rule.

jsonschema, kubernetes-validate and kmock accept a CRD the apiserver refuses: ``additionalProperties:
false`` beside ``properties`` (pydantic's ``extra="forbid"``) went unnoticed until a real cluster said
"additionalProperties and properties are mutual exclusive". The real upstream CRDs in ../shared/k8s
(PyTorchJob, Kubeflow Trainer v2) must pass too: a check that refuses them would be wrong, not strict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support import apiserver_crd
from tests.support.apiserver_crd import RULES, unknown_fields, validate_crd
from tests.support.shared import SHARED, skip_reason

REPO = Path(__file__).resolve().parents[2]
SHARED_K8S = SHARED / "k8s"
SHIPPED = sorted((REPO / "manifests" / "crd").glob("*.yaml")) + sorted(
    (REPO / "charts" / "coe-controller" / "crds").glob("*.yaml")
)
ROOT = "spec.versions[0].schema.openAPIV3Schema"
SPEC = f"{ROOT}.properties[spec]"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_LOADER)


def base_crd() -> dict:
    """A small CRD the apiserver accepts, using most schema features (defaults, maps, int-or-string, ...)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                    ],
                    "selectableFields": [{"jsonPath": ".spec.colour"}],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A widget.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {
                                    "type": "object",
                                    "description": "What the widget should be.",
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1, "default": 1},
                                        "colour": {
                                            "type": "string",
                                            "enum": ["red", "blue"],
                                            "nullable": True,
                                        },
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "parts": {
                                            "type": "array",
                                            "x-kubernetes-list-type": "map",
                                            "x-kubernetes-list-map-keys": ["name"],
                                            "items": {
                                                "type": "object",
                                                "required": ["name"],
                                                "properties": {
                                                    "name": {"type": "string", "pattern": "^[a-z]+$"}
                                                },
                                            },
                                        },
                                        "port": {
                                            "x-kubernetes-int-or-string": True,
                                            "anyOf": [{"type": "integer"}, {"type": "string"}],
                                        },
                                        "template": {
                                            "type": "object",
                                            "x-kubernetes-embedded-resource": True,
                                            "x-kubernetes-preserve-unknown-fields": True,
                                        },
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "self.size < 100",
                                            "message": "too big",
                                            "reason": "FieldValueInvalid",
                                        }
                                    ],
                                },
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


def _version(c: dict) -> dict:
    return c["spec"]["versions"][0]


def _root(c: dict) -> dict:
    return _version(c)["schema"]["openAPIV3Schema"]


def _spec(c: dict) -> dict:
    return _root(c)["properties"]["spec"]


def _props(c: dict) -> dict:
    return _spec(c)["properties"]


def _set(getter: Callable[[dict], dict], **values) -> Callable[[dict], None]:
    def mutate(c: dict) -> None:
        getter(c).update(values)

    return mutate


def _no_status(c: dict) -> None:
    del _version(c)["subresources"]


def _two_storage(c: dict) -> None:
    c["spec"]["versions"].append({**copy.deepcopy(_version(c)), "name": "v2"})


def _protected_group(c: dict) -> None:
    c["spec"]["group"] = "example.k8s.io"
    c["metadata"]["name"] = "widgets.example.k8s.io"


def _scale(c: dict) -> None:
    _version(c)["subresources"]["scale"] = {"specReplicasPath": ".size", "statusReplicasPath": ".status.size"}


def _root_type_array(c: dict) -> None:
    _no_status(c)
    _root(c).update(type="array", items={"type": "string"})


# (rule, path the apiserver would name, mutation of base_crd)
BAD: list[tuple[str, str, Callable[[dict], None]]] = [
    ("apiVersion", "apiVersion", lambda c: c.update(apiVersion="apiextensions.k8s.io/v1beta1")),
    ("unknown-field", f"{SPEC}.properties[size].const", lambda c: _props(c)["size"].update(const=1)),
    ("unknown-field", "spec.validation", lambda c: c["spec"].update(validation={"openAPIV3Schema": {}})),
    (
        "decode",
        f"{SPEC}.properties[colour].type",
        lambda c: _props(c)["colour"].update(type=["string", "null"]),
    ),
    ("metadata-name", "metadata.name", lambda c: c["metadata"].update(name="widget.example.com")),
    (
        "group",
        "spec.group",
        lambda c: (c["spec"].update(group="example"), c["metadata"].update(name="widgets.example")),
    ),
    ("scope", "spec.scope", lambda c: c["spec"].update(scope="Global")),
    (
        "preserveUnknownFields",
        "spec.preserveUnknownFields",
        lambda c: c["spec"].update(preserveUnknownFields=True),
    ),
    ("versions", "spec.versions", _two_storage),
    ("version-name", "spec.versions[0].name", lambda c: _version(c).update(name="V1")),
    ("schema-required", ROOT, lambda c: _version(c).pop("schema")),
    (
        "deprecationWarning",
        "spec.versions[0].deprecationWarning",
        lambda c: _version(c).update(deprecationWarning="old"),
    ),
    ("names-required", "spec.names.plural", lambda c: c["spec"]["names"].pop("plural")),
    ("names-format", "spec.names.shortNames[0]", lambda c: c["spec"]["names"].update(shortNames=["W D"])),
    ("names-format", "spec.names.listKind", lambda c: c["spec"]["names"].update(listKind="Widget")),
    (
        "printer-column",
        "spec.versions[0].additionalPrinterColumns[0].type",
        lambda c: _version(c)["additionalPrinterColumns"][0].update(type="float"),
    ),
    ("scale-subresource", "spec.versions[0].subresources.scale.specReplicasPath", _scale),
    (
        "selectable-field",
        "spec.versions[0].selectableFields[0].jsonPath",
        lambda c: _version(c).update(selectableFields=[{"jsonPath": ".spec.labels"}]),
    ),
    (
        "conversion",
        "spec.conversion.webhook.clientConfig",
        lambda c: c["spec"].update(conversion={"strategy": "Webhook"}),
    ),
    ("api-approval", "metadata.annotations[api-approved.kubernetes.io]", _protected_group),
    ("status-root", ROOT, _set(_root, minProperties=1)),
    ("root-nullable", f"{ROOT}.nullable", _set(_root, nullable=True)),
    ("type-invalid", f"{SPEC}.properties[size].type", lambda c: _props(c)["size"].update(type="int")),
    ("type-invalid", f"{SPEC}.properties[size].type", lambda c: _props(c)["size"].update(type="null")),
    (
        "default-forbidden",
        f"{ROOT}.properties[metadata].default",
        lambda c: _root(c)["properties"]["metadata"].update(default={"name": "w"}),
    ),
    *[
        ("unsupported-keyword", f"{SPEC}.{key}", _set(_spec, **{key: value}))
        for key, value in (
            ("$ref", "#/definitions/x"),
            ("definitions", {"x": {"type": "string"}}),
            ("dependencies", {"size": ["colour"]}),
            ("patternProperties", {"^x-": {"type": "string"}}),
            ("additionalItems", False),
            ("id", "widget"),
            ("$schema", "http://json-schema.org/draft-04/schema#"),
        )
    ],
    (
        "items-array",
        f"{SPEC}.properties[parts].items",
        lambda c: _props(c)["parts"].update(items=[{"type": "object"}]),
    ),
    (
        "embedded-in-meta",
        f"{ROOT}.properties[metadata].x-kubernetes-embedded-resource",
        lambda c: _root(c)["properties"]["metadata"].update(
            {"x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True}
        ),
    ),
    (
        "uniqueItems",
        f"{SPEC}.properties[parts].uniqueItems",
        lambda c: _props(c)["parts"].update(uniqueItems=True),
    ),
    # the bug of issue 16: pydantic's extra="forbid"
    (
        "properties-additionalProperties",
        f"{SPEC}.additionalProperties",
        _set(_spec, additionalProperties=False),
    ),
    (
        "properties-additionalProperties",
        f"{SPEC}.additionalProperties",
        _set(_spec, additionalProperties={"type": "string"}),
    ),
    (
        "preserve-unknown-false",
        f"{ROOT}.properties[status].x-kubernetes-preserve-unknown-fields",
        lambda c: _root(c)["properties"]["status"].update({"x-kubernetes-preserve-unknown-fields": False}),
    ),
    (
        "map-type",
        f"{SPEC}.properties[labels].x-kubernetes-map-type",
        lambda c: _props(c)["labels"].update({"x-kubernetes-map-type": "sparse"}),
    ),
    (
        "list-type",
        f"{SPEC}.properties[parts].x-kubernetes-list-map-keys",
        lambda c: _props(c)["parts"].pop("x-kubernetes-list-map-keys"),
    ),
    (
        "list-type",
        f"{SPEC}.properties[parts].items.x-kubernetes-map-type",
        lambda c: (
            _props(c)["parts"].pop("x-kubernetes-list-map-keys"),
            _props(c)["parts"].update({"x-kubernetes-list-type": "set"}),
        ),
    ),
    (
        "x-validations",
        f"{SPEC}.x-kubernetes-validations[0].rule",
        lambda c: _spec(c).update({"x-kubernetes-validations": [{"rule": "  "}]}),
    ),
    ("array-items", f"{SPEC}.properties[tags].items", lambda c: _props(c).update(tags={"type": "array"})),
    (
        "type-required",
        f"{SPEC}.properties[note].type",
        lambda c: _props(c).update(note={"description": "no type"}),
    ),
    ("root-type", f"{ROOT}.type", _root_type_array),
    (
        "additionalProperties-root",
        f"{ROOT}.additionalProperties",
        _set(_root, additionalProperties={"type": "string"}),
    ),
    (
        "embedded-resource",
        f"{SPEC}.properties[pod].properties",
        lambda c: _props(c).update(pod={"type": "object", "x-kubernetes-embedded-resource": True}),
    ),
    (
        "int-or-string",
        f"{SPEC}.properties[port].x-kubernetes-preserve-unknown-fields",
        lambda c: _props(c)["port"].update({"x-kubernetes-preserve-unknown-fields": True}),
    ),
    (
        "meta-types",
        f"{ROOT}.properties[kind].type",
        lambda c: _root(c)["properties"]["kind"].update(type="integer"),
    ),
    (
        "metadata-restricted",
        f"{ROOT}.properties[metadata]",
        lambda c: _root(c)["properties"]["metadata"].update(description="Standard object metadata."),
    ),
    (
        "metadata-restricted",
        f"{ROOT}.properties[metadata]",
        lambda c: _root(c)["properties"]["metadata"].update(
            properties={"name": {"type": "string"}, "labels": {"type": "object"}}
        ),
    ),
    (
        "nested-value-validation",
        f"{SPEC}.anyOf[1].description",
        _set(_spec, anyOf=[{"required": ["size"]}, {"required": ["colour"], "description": "or a colour"}]),
    ),
    (
        "pattern",
        f"{SPEC}.properties[parts].items.properties[name].pattern",
        lambda c: _props(c)["parts"]["items"]["properties"]["name"].update(pattern="^(?!x)[a-z]+$"),
    ),
    (
        "pattern",
        f"{SPEC}.properties[parts].items.properties[name].pattern",
        lambda c: _props(c)["parts"]["items"]["properties"]["name"].update(pattern="[a-z"),
    ),
    (
        "completeness",
        f"{ROOT}.properties[extra]",
        lambda c: (_no_status(c), _root(c).update(anyOf=[{"properties": {"extra": {"minLength": 1}}}])),
    ),
    ("default-invalid", f"{SPEC}.properties[size].default", lambda c: _props(c)["size"].update(default=0)),
    ("default-pruned", f"{SPEC}.default", _set(_spec, default={"size": 2, "shade": "dark"})),
]


def _case_id(case: tuple[str, str, Callable]) -> str:
    rule, path, _ = case
    return f"{rule}:{path.removeprefix(ROOT + '.').removeprefix('spec.versions[0].')}"


def test_the_base_crd_is_accepted():
    assert validate_crd(base_crd()) == []


@pytest.mark.parametrize("case", BAD, ids=[_case_id(c) for c in BAD])
def test_the_checker_refuses_a_known_bad_crd(case):
    rule, path, mutate = case
    crd = base_crd()
    mutate(crd)
    errors = validate_crd(crd)
    assert any(e.rule == rule and e.path == path for e in errors), (
        f"expected [{rule}] at {path}; got:\n" + "\n".join(map(str, errors))
    )


def test_every_rule_is_shown_able_to_fail():
    assert {rule for rule, _, _ in BAD} == set(RULES)


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(REPO)) for p in SHIPPED])
def test_every_shipped_crd_passes_the_apiserver_rules(path: Path):
    errors = validate_crd(load(path))
    assert not errors, f"kube-apiserver would refuse {path.relative_to(REPO)}:\n" + "\n".join(
        map(str, errors)
    )


def test_the_generated_crd_passes_and_still_documents_its_fields():
    from coe_controller import crd

    generated = crd.crd()
    assert validate_crd(generated) == []
    spec = generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [name for name, node in spec["properties"].items() if not node.get("description")]
    assert not undocumented, f"kubectl explain would show nothing for spec.{undocumented}"


def _upstream_crds() -> list[Path]:
    if not SHARED_K8S.is_dir():
        return []
    return sorted(SHARED_K8S.glob("*.yaml")) + sorted(
        (SHARED_K8S / "trainer-v2").glob("*kubeflow.org_*.yaml")
    )


UPSTREAM = _upstream_crds()


@pytest.mark.skipif(not UPSTREAM, reason=skip_reason(SHARED_K8S))
@pytest.mark.parametrize("path", UPSTREAM, ids=[p.name for p in UPSTREAM])
def test_real_upstream_crds_pass(path: Path):
    """PyTorchJob and the Trainer v2 CRDs are served by real clusters: the checker must accept them."""
    doc = load(path)
    assert doc["kind"] == "CustomResourceDefinition"
    errors = validate_crd(doc)
    assert not errors, f"the checker refuses a real CRD ({path.name}):\n" + "\n".join(map(str, errors[:20]))


def test_unknown_fields_are_what_pruning_drops():
    """Without additionalProperties: false the apiserver prunes a typo; strict field validation names it."""
    shipped = load(SHIPPED[0])
    schema = shipped["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = load(REPO / "manifests" / "examples" / "meld-mistral7b.yaml")
    assert unknown_fields(obj, schema) == []
    obj["spec"]["stratgy"] = "mixed_auxiliary"
    obj["spec"]["steer"]["roundz"] = 3
    assert unknown_fields(obj, schema) == [
        'unknown field "spec.steer.roundz"',
        'unknown field "spec.stratgy"',
    ]
    pruned, removed = apiserver_crd.prune(obj, schema)
    assert "stratgy" not in pruned["spec"] and removed == [".spec.steer.roundz", ".spec.stratgy"]
