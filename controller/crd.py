"""The ``coeexperiments.coe.ml`` CustomResourceDefinition, generated from the pydantic spec.

    python -m coe_controller.crd > manifests/crd/coe.ml_coeexperiments.yaml    (or: coe-ctl crd)

The spec model (coe_controller.spec) is the single source of truth; this module turns its JSON
schema into a Kubernetes *structural* schema: ``$ref`` inlined, ``Optional[X]`` as ``X`` +
``nullable``, free-form mappings as ``x-kubernetes-preserve-unknown-fields``, JSON-Schema-2020
``exclusiveMinimum: n`` as OpenAPI-3.0 ``minimum: n, exclusiveMinimum: true``, ``const`` as a
one-value ``enum``, no ``additionalProperties: false`` beside ``properties`` (``extra="forbid"``:
the apiserver refuses the pair and prunes unknown fields anyway), and no ``title``/``default``
(defaults live in the model, applied by the controller, so what is stored is what the user wrote).
Descriptions stay, for ``kubectl explain``. A test fails when the committed file differs from what
this module generates; tests/packaging/test_packaging_crd_apiserver.py checks it against
kube-apiserver's CRD rules (tests/support/apiserver_crd.py).
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from coe_controller import rbac

CRD_FILE = "manifests/crd/coe.ml_coeexperiments.yaml"

_DROP = ("title", "default", "$defs")


def _structural(node: Any, defs: dict) -> Any:
    """A JSON-schema node as a Kubernetes structural schema (the rules: this module's docstring)."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node:
        return _structural_union(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _DROP:
            out.update(_structural_keyword(key, value, defs))
    return _completed(out, defs)


def _structural_union(node: dict, defs: dict) -> Any:
    """``anyOf``: ``Optional[X]`` becomes ``X`` + ``nullable``; a real union (structural schemas
    cannot say it) stays free-form."""
    options = [o for o in node["anyOf"] if o != {"type": "null"}]
    nullable = len(options) < len(node["anyOf"])
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(options) == 1:
        out = _structural({**options[0], **rest}, defs)
    else:
        out = {**_structural(rest, defs), "x-kubernetes-preserve-unknown-fields": True}
    if nullable:
        out["nullable"] = True
    return out


def _structural_keyword(key: str, value: Any, defs: dict) -> dict[str, Any]:
    """One keyword of a schema object, as the structural schema spells it (one or two keywords)."""
    if key == "const":
        return {"enum": [value]}
    if key == "exclusiveMinimum" and not isinstance(value, bool):
        return {"minimum": value, "exclusiveMinimum": True}
    if key == "exclusiveMaximum" and not isinstance(value, bool):
        return {"maximum": value, "exclusiveMaximum": True}
    if key == "additionalProperties" and value is True:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if key == "properties":
        return {"properties": {k: _structural(v, defs) for k, v in value.items()}}
    if key in ("items", "additionalProperties"):
        return {key: _structural(value, defs)}
    return {key: value}


def _completed(out: dict[str, Any], defs: dict) -> dict[str, Any]:
    """What a structural schema object needs beyond its keywords: a type, items for a tuple, and
    unknown fields kept where nothing describes them."""
    if "prefixItems" in out:  # fixed-length tuples: an array of the common item type
        items = out.pop("prefixItems")
        out["items"] = _structural(items[0], defs) if items else {}
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "number"
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out and "properties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if "properties" in out and out.get("additionalProperties") is False:
        # pydantic's extra="forbid": kube-apiserver refuses additionalProperties beside properties
        # ("mutual exclusive", validation.go ValidateCustomResourceDefinitionOpenAPISchema). It prunes
        # unknown fields instead (kubectl's strict field validation reports them); the pydantic spec
        # still forbids them wherever it parses a file (coe-ctl submit/render, the local executor).
        del out["additionalProperties"]
    return out


def spec_schema() -> dict:
    """The structural schema of ``.spec`` (from the pydantic model)."""
    from coe_controller.spec import ExperimentSpec

    raw = ExperimentSpec.model_json_schema(by_alias=True)
    return _structural(raw, raw.get("$defs", {}))


def status_schema() -> dict:
    """What the controller writes to ``.status`` (typed where printer columns and tools read it)."""
    from coe_controller.reconcile import Phase, StepState

    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
    }
    step = {
        "type": "object",
        "required": ["name", "state"],
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "state": {"type": "string", "enum": [s.value for s in StepState]},
            "attempts": {"type": "integer", "minimum": 0},
            "jobName": {"type": "string"},
            "startTime": {"type": "string"},
            "finishTime": {"type": "string"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "output": {"type": "string"},
            "fingerprint": {"type": "string"},
            # pod restarts of the step's current job, counted by the controller (v1.9 keeps no count)
            "restarts": {"type": "integer", "minimum": 0},
            "podsSeen": {"type": "string"},
            "lastExitCode": {"type": "integer"},
            "metrics": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    return {
        "type": "object",
        "description": "Observed state, written by the controller.",
        "properties": {
            "phase": {"type": "string", "enum": [p.value for p in Phase]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer"},
            "currentStep": {"type": "string"},
            "steerRound": {"type": "integer"},
            "bestDevWeightedF1": {"type": "number"},
            "startTime": {"type": "string"},
            "completionTime": {"type": "string"},
            "conditions": {"type": "array", "items": condition},
            "steps": {"type": "array", "items": step},
            "steerRounds": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
            "bestMetrics": {"type": "object", "additionalProperties": {"type": "number"}},
            "artifacts": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }


def crd() -> dict:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{rbac.PLURAL}.{rbac.GROUP}"},
        "spec": {
            "group": rbac.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": rbac.KIND,
                "listKind": f"{rbac.KIND}List",
                "plural": rbac.PLURAL,
                "singular": rbac.SINGULAR,
                "shortNames": [rbac.SHORT_NAME],
                "categories": ["coe"],
            },
            "versions": [
                {
                    "name": rbac.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Step", "type": "string", "jsonPath": ".status.currentStep"},
                        {"name": "Round", "type": "integer", "jsonPath": ".status.steerRound"},
                        {
                            "name": "Dev-wF1",
                            "type": "number",
                            "jsonPath": ".status.bestDevWeightedF1",
                            "description": "Best dev weighted F1 of the ERC stage",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A CoE (Clue-of-Emotion) experiment: data, curriculum, and where it runs.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `python -m coe_controller.crd` from coe_controller.spec: do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def to_jsonschema(openapi: dict) -> dict:
    """An OpenAPI-3.0 structural schema as a JSON-Schema (draft 4) for ``jsonschema`` validation:
    ``nullable`` becomes a ``null`` type. (x-kubernetes-* keys are ignored by jsonschema.)"""
    node = copy.deepcopy(openapi)

    def walk(n: Any) -> None:
        if isinstance(n, dict):
            if n.pop("nullable", False) and "type" in n:
                n["type"] = [n["type"], "null"]
                if "enum" in n:
                    n["enum"] = [*n["enum"], None]
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node)
    return node


def main() -> int:
    sys.stdout.write(crd_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
