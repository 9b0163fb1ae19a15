"""kube-apiserver's CustomResourceDefinition validation, offline: would ``kubectl apply`` of this CRD be refused?

jsonschema, kubernetes-validate and kmock accept any JSON Schema inside a CRD. The real apiserver
(apiextensions-apiserver) refuses a CRD whose ``openAPIV3Schema`` is not *structural* or uses what it does
not support: for instance ``additionalProperties: false`` beside ``properties`` ("additionalProperties and
properties are mutual exclusive"), which pydantic's ``extra="forbid"`` emits. This module re-implements
those checks. Each rule names the kubernetes/kubernetes function it comes from; paths are relative to
``staging/src/k8s.io/apiextensions-apiserver/``:

* ``validation.go`` = ``pkg/apis/apiextensions/validation/validation.go`` (``ValidateCustomResourceDefinition``,
  ``validateCustomResourceDefinitionSpec``, ``ValidateCustomResourceDefinitionOpenAPISchema``,
  ``specStandardValidatorV3.validate``, ...);
* ``schema/validation.go`` = ``pkg/apiserver/schema/validation.go`` (``ValidateStructural``);
* ``schema/complete.go``, ``schema/convert.go`` (``NewStructural``), ``schema/defaulting/validation.go``
  (``ValidateDefaults``), ``schema/pruning/algorithm.go`` (``Prune``);
* ``v1/types.go``, ``v1/types_jsonschema.go``, ``v1/defaults.go`` = ``pkg/apis/apiextensions/v1/``: the wire
  format (what decodes) and the defaults applied before validation.

Usage::

    errors = validate_crd(yaml.safe_load(text))      # [] when the apiserver would accept the CRD
    print("\\n".join(map(str, errors)))
    # spec.versions[0].schema.openAPIV3Schema.properties[spec].additionalProperties: additionalProperties
    #   and properties are mutual exclusive [properties-additionalProperties]

    unknown_fields(obj, openapi_schema)              # what pruning drops = what strict field validation reports

Paths use apimachinery's ``field.Path`` notation, as the apiserver prints them: ``.child``, ``[key]``, ``[index]``.
This is the *create* path (``ValidateCustomResourceDefinition``): update-only rules and the ratcheting for
already stored CRDs do not apply.

Not checked (approximated or skipped, so a pass here is necessary, not sufficient):

* CEL: ``x-kubernetes-validations`` rules are checked for form only (rule/message/reason/fieldPath), not
  compiled; so no type errors in rules, no cost estimates, no oldSelf correlation checks;
* ``pattern``: Go RE2 is not Python ``re``; a pattern must compile in Python and must not use what RE2
  lacks (look-around, back-references, atomic groups) - other differences are not caught;
* defaults: validated with jsonschema Draft 4 (``nullable`` as a null type) instead of kube-openapi's
  validator, formats not checked; defaults inside the metadata of embedded resources
  (``objectmeta.Coerce``/``Validate``) are not checked;
* the CRD's own ObjectMeta beyond its name (labels, annotations syntax), webhook conversion client config
  details (URL/service/caBundle), selectableFields' CEL path grammar (only simple ``.a.b`` paths),
  ``status.acceptedNames``, and the final ``NewSchemaValidator`` build;
* completeness (schema/complete.go) starts at the root's allOf/anyOf/oneOf/not, as the source does;
* ``unknown-field`` is what ``--validate=strict`` (kubectl's default) refuses; with ``Warn``/``Ignore``
  the apiserver drops such keys instead, and the checks here run on the schema without them.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

# Rule id -> where it comes from. Every rule can be shown to fail (tests/packaging/test_packaging_crd_apiserver.py).
RULES: dict[str, str] = {
    # the wire format
    "apiVersion": "apiextensions.k8s.io/v1 is the only CRD API served since Kubernetes 1.22 (v1beta1 removed)",
    "unknown-field": "v1/types.go, v1/types_jsonschema.go json tags; kubectl apply's default --validate=strict "
    "(server-side field validation) refuses fields the type does not declare",
    "decode": "v1/types_jsonschema.go: a value of the wrong JSON type does not decode (e.g. type: [string, 'null'])",
    # validation.go: the CRD object
    "metadata-name": "validation.go ValidateCustomResourceDefinition nameValidationFn: DNS-1123 subdomain, "
    '== spec.names.plural+"."+spec.group',
    "group": "validation.go validateCustomResourceDefinitionSpec: required, DNS-1123 subdomain, at least one dot",
    "scope": "validation.go validateCustomResourceDefinitionSpec/validateEnumStrings: Cluster or Namespaced",
    "preserveUnknownFields": "validation.go validatePreserveUnknownFields: cannot be set to true",
    "versions": "validation.go validateCustomResourceDefinitionSpec: unique names, exactly one storage version",
    "version-name": "validation.go validateCustomResourceDefinitionSpec: version names are DNS-1035 labels",
    "schema-required": "validation.go validateCustomResourceDefinitionSpec (requireOpenAPISchema): every "
    "version needs schema.openAPIV3Schema",
    "deprecationWarning": "validation.go validateDeprecationWarning",
    "names-required": "validation.go validateCustomResourceDefinitionSpec: plural, singular, kind, listKind "
    "(singular and listKind after v1/defaults.go SetDefaults_CustomResourceDefinitionSpec)",
    "names-format": "validation.go ValidateCustomResourceDefinitionNames: DNS-1035 labels (kind/listKind "
    "lower-cased), kind != listKind",
    "printer-column": "validation.go ValidateCustomResourceColumnDefinition",
    "scale-subresource": "validation.go ValidateCustomResourceDefinitionSubresources",
    "selectable-field": "validation.go ValidateCustomResourceSelectableFields",
    "conversion": "validation.go validateCustomResourceConversion",
    "api-approval": "validation.go validateAPIApproval (apihelpers.IsProtectedCommunityGroup)",
    # validation.go: the schema
    "status-root": "validation.go validateCustomResourceDefinitionValidation: with the status subresource "
    "only allowedFieldsAtRootSchema at the root, and type object",
    "root-nullable": "validation.go validateCustomResourceDefinitionValidation: nullable cannot be true at the root",
    "type-invalid": "validation.go specStandardValidatorV3.validate (requireValidPropertyType, openapiV3Types; "
    "type null forbidden)",
    "default-forbidden": "validation.go specStandardValidatorV3.validate + ValidateCustomResourceDefinitionOpenAPISchema"
    " withForbiddenDefaults: no default in top-level metadata/apiVersion/kind or additionalProperties of metadata",
    "unsupported-keyword": "validation.go specStandardValidatorV3.validate: no id, additionalItems, "
    "patternProperties, definitions, dependencies, $ref; schema/convert.go validateUnsupportedFields: no $schema",
    "items-array": "validation.go specStandardValidatorV3.validate: items must be a schema object and not an array",
    "embedded-in-meta": "validation.go specStandardValidatorV3.validate: no x-kubernetes-embedded-resource inside "
    "resource meta",
    "uniqueItems": "validation.go ValidateCustomResourceDefinitionOpenAPISchema: uniqueItems cannot be true",
    "properties-additionalProperties": "validation.go ValidateCustomResourceDefinitionOpenAPISchema: "
    "additionalProperties (false or a schema) and properties are mutual exclusive",
    "preserve-unknown-false": "validation.go ValidateCustomResourceDefinitionOpenAPISchema: "
    "x-kubernetes-preserve-unknown-fields must be true or undefined",
    "map-type": "validation.go ValidateCustomResourceDefinitionOpenAPISchema: x-kubernetes-map-type needs type "
    "object, is atomic or granular",
    "list-type": "validation.go ValidateCustomResourceDefinitionOpenAPISchema + validateMapListKeysMapSet: "
    "x-kubernetes-list-type/-list-map-keys rules",
    "x-validations": "validation.go ValidateCustomResourceDefinitionOpenAPISchema: x-kubernetes-validations "
    "rule/message/messageExpression/reason/fieldPath form (CEL not compiled here)",
    # schema/validation.go, schema/complete.go: structural
    "array-items": "schema/validation.go validateStructuralInvariants: type array needs items",
    "type-required": "schema/validation.go validateStructuralInvariants: type must not be empty unless "
    "x-kubernetes-int-or-string or x-kubernetes-preserve-unknown-fields",
    "root-type": "schema/validation.go validateStructuralInvariants: type must be object at the root",
    "additionalProperties-root": "schema/validation.go validateStructuralInvariants: additionalProperties "
    "must not be used at the root",
    "embedded-resource": "schema/validation.go validateStructuralInvariants: x-kubernetes-embedded-resource "
    "needs type object, no additionalProperties, properties unless x-kubernetes-preserve-unknown-fields",
    "int-or-string": "schema/validation.go validateExtensions: x-kubernetes-int-or-string excludes "
    "preserve-unknown-fields and embedded-resource",
    "meta-types": "schema/validation.go validateStructuralInvariants/validateStructuralMetadataInvariants: "
    "kind and apiVersion type string, metadata type object (root and embedded resources)",
    "metadata-restricted": "schema/validation.go validateStructuralMetadataInvariants: metadata at the root "
    "may only restrict name and generateName",
    "nested-value-validation": "schema/validation.go validateNestedValueValidation: no type, default, title, "
    "description, nullable, additionalProperties, x-kubernetes-* or metadata inside allOf/anyOf/oneOf/not",
    "pattern": "schema/validation.go validateValueValidation: pattern must be a valid (RE2) regular expression",
    "completeness": "schema/complete.go validateStructuralCompleteness: fields in value validations must be "
    "specified outside of them",
    # schema/defaulting
    "default-invalid": "schema/defaulting/validation.go ValidateDefaults: defaults must validate",
    "default-pruned": "schema/defaulting/validation.go ValidateDefaults + schema/pruning/algorithm.go: defaults "
    "must not have unknown fields",
}


@dataclass(frozen=True)
class CRDError:
    path: str  # apimachinery field.Path notation
    rule: str  # a key of RULES
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.detail} [{self.rule}]"


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str, key: Any) -> str:
    return f"{path}[{key}]"


# --- apimachinery util/validation ---------------------------------------------------------------
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def is_dns1123_subdomain(value: str) -> bool:
    """apimachinery util/validation IsDNS1123Subdomain."""
    return isinstance(value, str) and len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.fullmatch(value))


def is_dns1035_label(value: str) -> bool:
    """apimachinery util/validation IsDNS1035Label."""
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS1035_LABEL.fullmatch(value))


# --- the wire format: pkg/apis/apiextensions/v1 -----------------------------------------------------
# JSONSchemaProps json names (v1/types_jsonschema.go) and the JSON types they decode from.
_STR, _BOOL, _INT, _NUM, _ANY = "string", "boolean", "integer", "number", "any"
_SCHEMA_FIELDS: dict[str, str] = {
    "id": _STR,
    "$schema": _STR,
    "$ref": _STR,
    "description": _STR,
    "type": _STR,
    "format": _STR,
    "title": _STR,
    "default": _ANY,
    "maximum": _NUM,
    "exclusiveMaximum": _BOOL,
    "minimum": _NUM,
    "exclusiveMinimum": _BOOL,
    "maxLength": _INT,
    "minLength": _INT,
    "pattern": _STR,
    "maxItems": _INT,
    "minItems": _INT,
    "uniqueItems": _BOOL,
    "multipleOf": _NUM,
    "enum": "list",
    "maxProperties": _INT,
    "minProperties": _INT,
    "required": "list-of-string",
    "items": "schema-or-list",
    "allOf": "list-of-schema",
    "oneOf": "list-of-schema",
    "anyOf": "list-of-schema",
    "not": "schema",
    "properties": "map-of-schema",
    "additionalProperties": "schema-or-bool",
    "patternProperties": "map-of-schema",
    "dependencies": "map",
    "additionalItems": "schema-or-bool",
    "definitions": "map-of-schema",
    "externalDocs": "map",
    "example": _ANY,
    "nullable": _BOOL,
    "x-kubernetes-preserve-unknown-fields": _BOOL,
    "x-kubernetes-embedded-resource": _BOOL,
    "x-kubernetes-int-or-string": _BOOL,
    "x-kubernetes-list-map-keys": "list-of-string",
    "x-kubernetes-list-type": _STR,
    "x-kubernetes-map-type": _STR,
    "x-kubernetes-validations": "list",
}
_VALIDATION_RULE_FIELDS = {"rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf"}
_EXTERNAL_DOCS_FIELDS = {"description", "url"}

# v1/types.go json names of the CRD object's own structs.
_CRD_FIELDS = {"apiVersion", "kind", "metadata", "spec", "status"}
_SPEC_FIELDS = {"group", "names", "scope", "versions", "conversion", "preserveUnknownFields"}
_NAMES_FIELDS = {"plural", "singular", "shortNames", "kind", "listKind", "categories"}
_VERSION_FIELDS = {
    "name",
    "served",
    "storage",
    "deprecated",
    "deprecationWarning",
    "schema",
    "subresources",
    "additionalPrinterColumns",
    "selectableFields",
}
_VALIDATION_FIELDS = {"openAPIV3Schema"}
_SUBRESOURCES_FIELDS = {"status", "scale"}
_SCALE_FIELDS = {"specReplicasPath", "statusReplicasPath", "labelSelectorPath"}
_COLUMN_FIELDS = {"name", "type", "format", "description", "priority", "jsonPath"}
_SELECTABLE_FIELD_FIELDS = {"jsonPath"}
_CONVERSION_FIELDS = {"strategy", "webhook"}
_WEBHOOK_CONVERSION_FIELDS = {"clientConfig", "conversionReviewVersions"}

# validation.go
_OPENAPI_V3_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_PRINTER_COLUMN_TYPES = {"integer", "number", "string", "boolean", "date"}
_PRINTER_COLUMN_FORMATS = {"int32", "int64", "float", "double", "byte", "date", "date-time", "password"}
_SUPPORTED_VALIDATION_REASONS = {
    "FieldValueRequired",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueDuplicate",
}
_MAX_SELECTABLE_FIELDS = 8
_META_FIELDS = {"metadata", "kind", "apiVersion"}
# validation.go allowedFieldsAtRootSchema, as json names
_ALLOWED_AT_ROOT_WITH_STATUS = {
    "description",
    "type",
    "format",
    "title",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "required",
    "items",
    "properties",
    "externalDocs",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
}
# schema/validation.go intOrStringAnyOf
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def _is_zero(key: str, value: Any) -> bool:
    """Whether a decoded JSONSchemaProps field holds Go's zero value (null decodes to zero; so do false and "").
    Pointer fields (maximum, maxLength, ...) are non-zero even at 0."""
    if value is None or value is False or value == "":
        return True
    # NewStructural drops empty properties/enum/allOf/anyOf/oneOf (schema/convert.go)
    return key in ("properties", "enum", "allOf", "anyOf", "oneOf") and len(value) == 0


def _present(node: dict, key: str) -> bool:
    return key in node and not _is_zero(key, node[key])


def _json_type_ok(kind: str, value: Any) -> bool:
    if value is None:  # JSON null decodes to the zero value
        return True
    if kind == _ANY:
        return True
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in ("list", "list-of-schema"):
        return isinstance(value, list) and (kind == "list" or all(isinstance(v, dict) for v in value))
    if kind == "list-of-string":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind in ("map", "schema"):
        return isinstance(value, dict)
    if kind == "map-of-schema":
        return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
    if kind == "schema-or-list":
        return isinstance(value, dict) or (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        )
    if kind == "schema-or-bool":
        return isinstance(value, dict | bool)
    raise AssertionError(kind)


def _decode_schema(node: Any, path: str, errors: list[CRDError], fatal: list[CRDError]) -> None:
    """Strict decoding of a JSONSchemaProps tree (v1/types_jsonschema.go): unknown keys go to ``errors``
    (kubectl's strict field validation refuses them; otherwise they are silently dropped), values of the
    wrong JSON type to ``fatal`` (nothing decodes, no further validation)."""
    if not isinstance(node, dict):
        fatal.append(CRDError(path, "decode", f"must be a JSON object (a schema), not {type(node).__name__}"))
        return
    for key, value in node.items():
        kind = _SCHEMA_FIELDS.get(key)
        if kind is None:
            errors.append(
                CRDError(_child(path, key), "unknown-field", "unknown field (not in JSONSchemaProps)")
            )
            continue
        if not _json_type_ok(kind, value):
            fatal.append(CRDError(_child(path, key), "decode", f"cannot decode {value!r} as {kind}"))
            continue
        sub = _child(path, key)
        if kind == "schema" or (kind in ("schema-or-list", "schema-or-bool") and isinstance(value, dict)):
            _decode_schema(value, sub, errors, fatal)
        elif kind == "schema-or-list" and isinstance(value, list) or kind == "list-of-schema":
            for i, v in enumerate(value or []):
                _decode_schema(v, _key(sub, i), errors, fatal)
        elif kind == "map-of-schema":
            for k, v in value.items():
                _decode_schema(v, _key(sub, k), errors, fatal)
        elif key == "dependencies":
            for k, v in value.items():
                if isinstance(v, dict):
                    _decode_schema(v, _key(sub, k), errors, fatal)
                elif not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
                    fatal.append(CRDError(_key(sub, k), "decode", "must be a schema or a list of strings"))
        elif key == "externalDocs":
            for k in value:
                if k not in _EXTERNAL_DOCS_FIELDS:
                    errors.append(CRDError(_child(sub, k), "unknown-field", "unknown field"))
        elif key == "x-kubernetes-validations":
            for i, rule in enumerate(value):
                if not isinstance(rule, dict):
                    fatal.append(CRDError(_key(sub, i), "decode", "must be an object"))
                    continue
                for k in rule:
                    if k not in _VALIDATION_RULE_FIELDS:
                        errors.append(CRDError(_child(_key(sub, i), k), "unknown-field", "unknown field"))


def _unknown_keys(obj: Any, allowed: set[str], path: str, errors: list[CRDError]) -> None:
    if isinstance(obj, dict):
        for k in obj:
            if k not in allowed:
                errors.append(CRDError(_child(path, k), "unknown-field", "unknown field"))


# --- the CRD object: validation.go --------------------------------------------------------------
def validate_crd(crd: Any) -> list[CRDError]:
    """All reasons kube-apiserver would refuse to create this CustomResourceDefinition ([] = accepted)."""
    if not isinstance(crd, dict):
        return [CRDError("", "decode", "a CRD must be a JSON object")]
    errors: list[CRDError] = []
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        errors.append(
            CRDError(
                "apiVersion",
                "apiVersion",
                f"must be apiextensions.k8s.io/v1 CustomResourceDefinition, not "
                f"{crd.get('apiVersion')!r} {crd.get('kind')!r}",
            )
        )
        return errors
    _unknown_keys(crd, _CRD_FIELDS, "", errors)
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        return [*errors, CRDError("spec", "decode", "spec must be an object")]
    _unknown_keys(spec, _SPEC_FIELDS, "spec", errors)
    names = dict(spec.get("names") or {})
    _unknown_keys(names, _NAMES_FIELDS, "spec.names", errors)
    # v1/defaults.go SetDefaults_CustomResourceDefinitionSpec runs before validation
    kind = names.get("kind") or ""
    if not names.get("singular"):
        names["singular"] = kind.lower()
    if not names.get("listKind") and kind:
        names["listKind"] = kind + "List"

    # ValidateCustomResourceDefinition: metadata.name
    group = spec.get("group") or ""
    meta = crd.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not name:
        errors.append(
            CRDError("metadata.name", "metadata-name", "Required value: name or generateName is required")
        )
    else:
        if not is_dns1123_subdomain(name):
            errors.append(
                CRDError(
                    "metadata.name", "metadata-name", f"Invalid value {name!r}: not a DNS-1123 subdomain"
                )
            )
        if name != f"{names.get('plural', '')}.{group}":
            errors.append(
                CRDError(
                    "metadata.name",
                    "metadata-name",
                    f'Invalid value {name!r}: must be spec.names.plural+"."+spec.group',
                )
            )

    # validateCustomResourceDefinitionSpec
    if not group:
        errors.append(CRDError("spec.group", "group", "Required value"))
    elif not is_dns1123_subdomain(group):
        errors.append(CRDError("spec.group", "group", f"Invalid value {group!r}: not a DNS-1123 subdomain"))
    elif len(group.split(".")) < 2:
        errors.append(
            CRDError(
                "spec.group", "group", f"Invalid value {group!r}: should be a domain with at least one dot"
            )
        )
    scope = spec.get("scope") or ""
    if not scope:
        errors.append(CRDError("spec.scope", "scope", "Required value"))
    elif scope not in ("Cluster", "Namespaced"):
        errors.append(
            CRDError("spec.scope", "scope", f'Unsupported value {scope!r}: "Cluster", "Namespaced"')
        )
    if spec.get("preserveUnknownFields") is True:  # validatePreserveUnknownFields
        errors.append(
            CRDError(
                "spec.preserveUnknownFields",
                "preserveUnknownFields",
                "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead",
            )
        )

    versions = spec.get("versions") or []
    if not isinstance(versions, list):
        return [*errors, CRDError("spec.versions", "decode", "must be a list")]
    seen: set[str] = set()
    storage = 0
    for i, version in enumerate(versions):
        vpath = _key("spec.versions", i)
        if not isinstance(version, dict):
            errors.append(CRDError(vpath, "decode", "must be an object"))
            continue
        _unknown_keys(version, _VERSION_FIELDS, vpath, errors)
        vname = version.get("name") or ""
        if version.get("storage") is True:
            storage += 1
        if vname in seen:
            errors.append(CRDError("spec.versions", "versions", "must contain unique version names"))
        seen.add(vname)
        if not is_dns1035_label(vname):
            errors.append(
                CRDError(
                    _child(vpath, "name"), "version-name", f"Invalid value {vname!r}: not a DNS-1035 label"
                )
            )
        errors += _validate_version(version, vpath)
    if storage != 1:
        errors.append(
            CRDError("spec.versions", "versions", "must have exactly one version marked as storage version")
        )

    for field in ("plural", "singular", "kind", "listKind"):
        if not names.get(field):
            errors.append(CRDError(_child("spec.names", field), "names-required", "Required value"))
    errors += _validate_names(names, "spec.names")
    errors += _validate_conversion(spec.get("conversion"), "spec.conversion")
    errors += _validate_api_approval(group, meta.get("annotations") if isinstance(meta, dict) else None)
    return errors


def _validate_names(names: dict, path: str) -> list[CRDError]:
    """validation.go ValidateCustomResourceDefinitionNames."""
    errors = []
    for field, lower in (("plural", False), ("singular", False), ("kind", True), ("listKind", True)):
        value = names.get(field)
        if value and not is_dns1035_label(value.lower() if lower else value):
            errors.append(
                CRDError(
                    _child(path, field), "names-format", f"Invalid value {value!r}: not a DNS-1035 label"
                )
            )
    for list_field in ("shortNames", "categories"):
        for i, value in enumerate(names.get(list_field) or []):
            if not is_dns1035_label(value):
                errors.append(
                    CRDError(
                        _key(_child(path, list_field), i),
                        "names-format",
                        f"Invalid value {value!r}: not a DNS-1035 label",
                    )
                )
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        errors.append(
            CRDError(_child(path, "listKind"), "names-format", "kind and listKind may not be the same")
        )
    return errors


def _validate_version(version: dict, vpath: str) -> list[CRDError]:
    """validation.go validateCustomResourceDefinitionVersion (+ the per-version parts of ...Spec)."""
    errors: list[CRDError] = []
    # validateDeprecationWarning
    warning = version.get("deprecationWarning")
    wpath = _child(vpath, "deprecationWarning")
    if warning is not None:
        if not version.get("deprecated"):
            errors.append(CRDError(wpath, "deprecationWarning", "can only be set for deprecated versions"))
        if len(warning) > 256:
            errors.append(CRDError(wpath, "deprecationWarning", "must be <= 256 characters long"))
        if len(warning) == 0:
            errors.append(CRDError(wpath, "deprecationWarning", "must not be an empty string"))
        if any(not ch.isprintable() for ch in warning):
            errors.append(
                CRDError(wpath, "deprecationWarning", "must only contain printable UTF-8 characters")
            )

    subresources = version.get("subresources") or {}
    _unknown_keys(subresources, _SUBRESOURCES_FIELDS, _child(vpath, "subresources"), errors)
    status_enabled = isinstance(subresources, dict) and subresources.get("status") is not None
    schema = (
        (version.get("schema") or {}).get("openAPIV3Schema")
        if isinstance(version.get("schema"), dict)
        else None
    )
    _unknown_keys(version.get("schema"), _VALIDATION_FIELDS, _child(vpath, "schema"), errors)
    spath = _child(_child(vpath, "schema"), "openAPIV3Schema")
    if schema is None:
        errors.append(CRDError(spath, "schema-required", "Required value: schemas are required"))
    else:
        errors += validate_schema(schema, spath, status_subresource=status_enabled)

    # ValidateCustomResourceDefinitionSubresources
    scale = subresources.get("scale") if isinstance(subresources, dict) else None
    if scale is not None:
        sc = _child(_child(vpath, "subresources"), "scale")
        _unknown_keys(scale, _SCALE_FIELDS, sc, errors)
        for field, prefixes in (("specReplicasPath", (".spec.",)), ("statusReplicasPath", (".status.",))):
            value = scale.get(field) or ""
            if not value:
                errors.append(CRDError(_child(sc, field), "scale-subresource", "Required value"))
            elif not value.startswith("."):
                errors.append(
                    CRDError(
                        _child(sc, field), "scale-subresource", "must be a simple json path starting with ."
                    )
                )
            elif not value.startswith(prefixes):
                errors.append(
                    CRDError(
                        _child(sc, field),
                        "scale-subresource",
                        f"should be a json path under {prefixes[0][:-1]}",
                    )
                )
        selector = scale.get("labelSelectorPath")
        if selector and not selector.startswith((".spec.", ".status.")):
            errors.append(
                CRDError(
                    _child(sc, "labelSelectorPath"),
                    "scale-subresource",
                    "should be a json path under either .spec or .status",
                )
            )

    # ValidateCustomResourceColumnDefinition
    for i, col in enumerate(version.get("additionalPrinterColumns") or []):
        cpath = _key(_child(vpath, "additionalPrinterColumns"), i)
        _unknown_keys(col, _COLUMN_FIELDS, cpath, errors)
        if not col.get("name"):
            errors.append(CRDError(_child(cpath, "name"), "printer-column", "Required value"))
        ctype = col.get("type") or ""
        if ctype not in _PRINTER_COLUMN_TYPES:
            errors.append(
                CRDError(
                    _child(cpath, "type"),
                    "printer-column",
                    f"{ctype!r}: must be one of {','.join(sorted(_PRINTER_COLUMN_TYPES))}",
                )
            )
        if col.get("format") and col["format"] not in _PRINTER_COLUMN_FORMATS:
            errors.append(
                CRDError(_child(cpath, "format"), "printer-column", f"{col['format']!r}: unsupported format")
            )
        jp = col.get("jsonPath") or ""
        if not jp:
            errors.append(CRDError(_child(cpath, "JSONPath"), "printer-column", "Required value"))
        elif not jp.startswith("."):  # validateSimpleJSONPath
            errors.append(
                CRDError(
                    _child(cpath, "JSONPath"), "printer-column", "must be a simple json path starting with ."
                )
            )

    # ValidateCustomResourceSelectableFields
    fields = version.get("selectableFields") or []
    unique: set[str] = set()
    for i, sel in enumerate(fields):
        fpath = _child(_key(_child(vpath, "selectableFields"), i), "jsonPath")
        _unknown_keys(sel, _SELECTABLE_FIELD_FIELDS, _key(_child(vpath, "selectableFields"), i), errors)
        jp = sel.get("jsonPath") or ""
        if not jp:
            errors.append(CRDError(fpath, "selectable-field", "Required value"))
            continue
        target = _resolve_simple_path(schema, jp)
        if target is None:
            errors.append(CRDError(fpath, "selectable-field", f"{jp!r} is an invalid path"))
            continue
        if jp.split(".")[1] == "metadata":
            errors.append(CRDError(fpath, "selectable-field", "must not point to fields in metadata"))
        if target.get("type") not in ("string", "boolean", "integer"):
            errors.append(
                CRDError(
                    fpath, "selectable-field", "must point to a field of type string, boolean or integer"
                )
            )
        if jp in unique:
            errors.append(CRDError(fpath, "selectable-field", "Duplicate value"))
        unique.add(jp)
    if len(unique) > _MAX_SELECTABLE_FIELDS:
        errors.append(
            CRDError(
                _child(vpath, "selectableFields"),
                "selectable-field",
                f"must have at most {_MAX_SELECTABLE_FIELDS} items",
            )
        )
    return errors


def _resolve_simple_path(schema: Any, json_path: str) -> dict | None:
    """A ``.a.b`` path through ``properties`` (cel.ValidFieldPath without array or bracket notation)."""
    if not isinstance(schema, dict) or not json_path.startswith(".") or json_path == ".":
        return None
    node = schema
    for part in json_path[1:].split("."):
        props = node.get("properties") or {}
        if part not in props:
            return None
        node = props[part]
    return node


def _validate_conversion(conversion: Any, path: str) -> list[CRDError]:
    """validation.go validateCustomResourceConversion, on the v1 shape (conversion.webhook.clientConfig)."""
    if conversion is None:
        return []
    errors: list[CRDError] = []
    _unknown_keys(conversion, _CONVERSION_FIELDS, path, errors)
    strategy = conversion.get("strategy") or ""
    webhook = conversion.get("webhook")
    if strategy not in ("None", "Webhook"):
        errors.append(
            CRDError(
                _child(path, "strategy"), "conversion", f'Unsupported value {strategy!r}: "None", "Webhook"'
            )
        )
    if strategy == "Webhook":
        if not isinstance(webhook, dict) or not webhook.get("clientConfig"):
            errors.append(
                CRDError(
                    _child(_child(path, "webhook"), "clientConfig"),
                    "conversion",
                    "required when strategy is set to Webhook",
                )
            )
        else:
            _unknown_keys(webhook, _WEBHOOK_CONVERSION_FIELDS, _child(path, "webhook"), errors)
            cc = webhook["clientConfig"]
            if (cc.get("url") is None) == (cc.get("service") is None):
                errors.append(
                    CRDError(
                        _child(_child(path, "webhook"), "clientConfig"),
                        "conversion",
                        "exactly one of url or service is required",
                    )
                )
        versions = (webhook or {}).get("conversionReviewVersions") or []
        vpath = _child(_child(path, "webhook"), "conversionReviewVersions")
        if not versions:
            errors.append(CRDError(vpath, "conversion", "Required value"))
        elif not set(versions) & {"v1", "v1beta1"}:
            errors.append(CRDError(vpath, "conversion", "must include at least one of v1, v1beta1"))
    elif webhook is not None:
        errors.append(
            CRDError(
                _child(path, "webhook"), "conversion", "should not be set when strategy is not set to Webhook"
            )
        )
    return errors


def _validate_api_approval(group: str, annotations: Any) -> list[CRDError]:
    """validation.go validateAPIApproval: groups under k8s.io / kubernetes.io need the approval annotation."""
    protected = any(group == d or group.endswith("." + d) for d in ("k8s.io", "kubernetes.io"))
    if not protected:
        return []
    key = "api-approved.kubernetes.io"
    value = (annotations or {}).get(key)
    path = _key("metadata.annotations", key)
    if value is None:
        return [
            CRDError(
                path,
                "api-approval",
                f"Required value: protected groups must have approval annotation {key!r}",
            )
        ]
    if not (value.startswith("unapproved") or re.match(r"https?://[^/\s]+", value)):
        return [
            CRDError(
                path, "api-approval", f"Invalid value {value!r}: must be a URL or start with 'unapproved'"
            )
        ]
    return []


# --- the schema ------------------------------------------------------------------------------------
def validate_schema(
    schema: Any, path: str = "openAPIV3Schema", status_subresource: bool = False
) -> list[CRDError]:
    """The checks of validation.go validateCustomResourceDefinitionValidation on one openAPIV3Schema (create:
    structural schema, pruned defaults, atomic set items and map-list key rules all required)."""
    errors: list[CRDError] = []
    fatal: list[CRDError] = []
    _decode_schema(schema, path, errors, fatal)
    if fatal:  # nothing decodes: the apiserver answers 400 before validating
        return fatal + errors
    # unknown keys are dropped on decoding (strict field validation reported them above)
    schema = _strip_unknown(schema)

    if status_subresource:
        for key, value in schema.items():
            if _is_zero(key, value):
                continue
            if key == "type":
                if value != "object":
                    errors.append(
                        CRDError(
                            _child(path, "type"),
                            "status-root",
                            'only "object" is allowed as the type at the root of the schema if the status subresource is enabled',
                        )
                    )
                    break
                continue
            if key not in _ALLOWED_AT_ROOT_WITH_STATUS:
                errors.append(
                    CRDError(
                        path,
                        "status-root",
                        f"{key} is not allowed at the root of the schema if the status subresource is enabled "
                        "(only allowedFieldsAtRootSchema are)",
                    )
                )
                break
    if schema.get("nullable") is True:
        errors.append(
            CRDError(_child(path, "nullable"), "root-nullable", "nullable cannot be true at the root")
        )

    openapi = _openapi_schema(schema, path, _Ctx(), is_root=True)
    structural = _structural_invariants(schema, _ROOT, path) + _completeness(schema, path)
    errors += openapi + structural
    if not structural and not openapi:
        # validation.go: ValidateDefaults runs only when the schema is structural
        errors += _validate_defaults(schema, path)
    return errors


def _strip_unknown(node: Any) -> Any:
    if isinstance(node, list):
        return [_strip_unknown(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key not in _SCHEMA_FIELDS:
            continue
        if key in ("properties", "patternProperties", "definitions") or (key == "dependencies"):
            out[key] = {k: _strip_unknown(v) if isinstance(v, dict) else v for k, v in value.items()}
        elif key in ("items", "not", "additionalProperties", "additionalItems", "allOf", "anyOf", "oneOf"):
            out[key] = _strip_unknown(value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class _Ctx:
    """specStandardValidatorV3's state (validation.go)."""

    allow_defaults: bool = True
    disallow_defaults_reason: str = ""
    inside_resource_meta: bool = False

    def forbid_defaults(self, reason: str) -> _Ctx:
        return _Ctx(False, reason, self.inside_resource_meta)

    def in_meta(self) -> _Ctx:
        return _Ctx(self.allow_defaults, self.disallow_defaults_reason, True)


_UNSUPPORTED = {
    "id": "id is not supported",
    "additionalItems": "additionalItems is not supported",
    "patternProperties": "patternProperties is not supported",
    "definitions": "definitions is not supported",
    "dependencies": "dependencies is not supported",
    "$ref": "$ref is not supported",
}


def _standard_v3(node: dict, path: str, ctx: _Ctx) -> list[CRDError]:
    """validation.go specStandardValidatorV3.validate (+ schema/convert.go validateUnsupportedFields for $schema)."""
    errors = []
    t = node.get("type")
    if t and t not in _OPENAPI_V3_TYPES:
        errors.append(
            CRDError(
                _child(path, "type"),
                "type-invalid",
                f"Unsupported value {t!r}: {', '.join(sorted(_OPENAPI_V3_TYPES))}",
            )
        )
    if "default" in node and node["default"] is not None and not ctx.allow_defaults:
        detail = "must not be set" + (
            f" {ctx.disallow_defaults_reason}" if ctx.disallow_defaults_reason else ""
        )
        errors.append(CRDError(_child(path, "default"), "default-forbidden", detail))
    for key, detail in _UNSUPPORTED.items():
        if key in node and node[key] not in (None, "", {}, []):
            errors.append(CRDError(_child(path, key), "unsupported-keyword", detail))
    if node.get("$schema"):
        errors.append(
            CRDError(
                _child(path, "$schema"), "unsupported-keyword", "OpenAPIV3Schema 'schema' is not supported"
            )
        )
    if t == "null":
        errors.append(
            CRDError(
                _child(path, "type"),
                "type-invalid",
                "type cannot be set to null, use nullable as an alternative",
            )
        )
    if isinstance(node.get("items"), list) and node["items"]:
        errors.append(
            CRDError(_child(path, "items"), "items-array", "items must be a schema object and not an array")
        )
    if ctx.inside_resource_meta and node.get("x-kubernetes-embedded-resource") is True:
        errors.append(
            CRDError(
                _child(path, "x-kubernetes-embedded-resource"),
                "embedded-in-meta",
                "must not be used inside of resource meta",
            )
        )
    return errors


def _openapi_schema(node: Any, path: str, ctx: _Ctx, is_root: bool = False) -> list[CRDError]:
    """validation.go ValidateCustomResourceDefinitionOpenAPISchema (CEL compilation left out)."""
    if not isinstance(node, dict):
        return []
    errors = _standard_v3(node, path, ctx)
    if node.get("uniqueItems") is True:
        errors.append(
            CRDError(
                _child(path, "uniqueItems"),
                "uniqueItems",
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    props = node.get("properties") or {}
    ap = node.get("additionalProperties")
    if ap is not None:
        if props and (ap is False or isinstance(ap, dict)):
            errors.append(
                CRDError(
                    _child(path, "additionalProperties"),
                    "properties-additionalProperties",
                    "additionalProperties and properties are mutual exclusive",
                )
            )
        if isinstance(ap, dict):
            sub = (
                ctx.forbid_defaults("inside additionalProperties applying to object metadata")
                if ctx.inside_resource_meta
                else ctx
            )
            errors += _openapi_schema(ap, _child(path, "additionalProperties"), sub)
    for name, sub_node in props.items():
        sub = ctx
        if (is_root or node.get("x-kubernetes-embedded-resource") is True) and name in _META_FIELDS:
            sub = sub.in_meta()
            if is_root:
                sub = sub.forbid_defaults(f"in top-level {name}")
        errors += _openapi_schema(sub_node, _key(_child(path, "properties"), name), sub)
    errors += _openapi_schema(node.get("not"), _child(path, "not"), ctx)
    for junctor in ("allOf", "oneOf", "anyOf"):
        for i, sub_node in enumerate(node.get(junctor) or []):
            errors += _openapi_schema(sub_node, _key(_child(path, junctor), i), ctx)
    for name, sub_node in (node.get("definitions") or {}).items():
        errors += _openapi_schema(sub_node, _key(_child(path, "definitions"), name), ctx)
    items = node.get("items")
    if isinstance(items, dict):
        errors += _openapi_schema(items, _child(path, "items"), ctx)
    elif isinstance(items, list):
        for i, sub_node in enumerate(items):
            errors += _openapi_schema(sub_node, _key(_child(path, "items"), i), ctx)
    for name, dep in (node.get("dependencies") or {}).items():
        if isinstance(dep, dict):
            errors += _openapi_schema(dep, _key(_child(path, "dependencies"), name), ctx)

    if node.get("x-kubernetes-preserve-unknown-fields") is False:
        errors.append(
            CRDError(
                _child(path, "x-kubernetes-preserve-unknown-fields"),
                "preserve-unknown-false",
                "must be true or undefined",
            )
        )
    errors += _list_and_map_types(node, path)
    errors += _x_validations(node, path)
    return errors


def _list_and_map_types(node: dict, path: str) -> list[CRDError]:
    """validation.go: x-kubernetes-map-type / -list-type / -list-map-keys (requireAtomicSetType and
    requireMapListKeysMapSetValidation hold on create)."""
    errors = []
    t = node.get("type") or ""
    map_type = node.get("x-kubernetes-map-type")
    if map_type is not None:
        if t != "object":
            errors.append(
                CRDError(
                    _child(path, "type"), "map-type", "must be object if x-kubernetes-map-type is specified"
                )
            )
        if map_type not in ("atomic", "granular"):
            errors.append(
                CRDError(
                    _child(path, "x-kubernetes-map-type"),
                    "map-type",
                    f'Unsupported value {map_type!r}: "atomic", "granular"',
                )
            )
    list_type = node.get("x-kubernetes-list-type")
    items = node.get("items") if isinstance(node.get("items"), dict) else None
    if list_type is not None and t != "array":
        errors.append(
            CRDError(
                _child(path, "type"), "list-type", "must be array if x-kubernetes-list-type is specified"
            )
        )
    elif list_type == "set" and items is not None:
        if items.get("type") == "array" and items.get("x-kubernetes-list-type", "atomic") != "atomic":
            errors.append(
                CRDError(
                    _child(_child(path, "items"), "x-kubernetes-list-type"),
                    "list-type",
                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                )
            )
        if items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
            errors.append(
                CRDError(
                    _child(_child(path, "items"), "x-kubernetes-map-type"),
                    "list-type",
                    "must be atomic as item of a list with x-kubernetes-list-type=set",
                )
            )
    if list_type is not None and list_type not in ("atomic", "set", "map"):
        errors.append(
            CRDError(
                _child(path, "x-kubernetes-list-type"),
                "list-type",
                f'Unsupported value {list_type!r}: "atomic", "set", "map"',
            )
        )
    keys = node.get("x-kubernetes-list-map-keys") or []
    if keys and list_type != "map":
        errors.append(
            CRDError(
                _child(path, "x-kubernetes-list-type"),
                "list-type",
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )
        )
    if list_type == "map":
        if not keys:
            errors.append(
                CRDError(
                    _child(path, "x-kubernetes-list-map-keys"),
                    "list-type",
                    "must not be empty if x-kubernetes-list-type is map",
                )
            )
        if "items" not in node:
            errors.append(
                CRDError(
                    _child(path, "items"), "list-type", "must have a schema if x-kubernetes-list-type is map"
                )
            )
        elif items is None:
            errors.append(
                CRDError(
                    _child(path, "items"),
                    "list-type",
                    "must only have a single schema if x-kubernetes-list-type is map",
                )
            )
        elif items.get("type") != "object":
            errors.append(
                CRDError(
                    _child(_child(path, "items"), "type"),
                    "list-type",
                    "must be object if parent array's x-kubernetes-list-type is map",
                )
            )
        else:
            item_props = items.get("properties") or {}
            for k in keys:
                if k not in item_props:
                    errors.append(
                        CRDError(
                            _child(path, "x-kubernetes-list-map-keys"),
                            "list-type",
                            "entries must all be names of item properties",
                        )
                    )
                elif item_props[k].get("type") in ("array", "object"):
                    errors.append(
                        CRDError(
                            _child(_key(_child(_child(path, "items"), "properties"), k), "type"),
                            "list-type",
                            "must be a scalar type if parent array's x-kubernetes-list-type is map",
                        )
                    )
            if len(set(keys)) != len(keys):
                errors.append(
                    CRDError(
                        _child(path, "x-kubernetes-list-map-keys"),
                        "list-type",
                        "must not contain duplicate entries",
                    )
                )
    # validateMapListKeysMapSet
    if items is not None and list_type in ("set", "map"):
        if items.get("nullable") is True:
            errors.append(
                CRDError(
                    _child(_child(path, "items"), "nullable"),
                    "list-type",
                    f"cannot be nullable when x-kubernetes-list-type is {list_type}",
                )
            )
        if list_type == "map":
            required = set(items.get("required") or [])
            for k in keys:
                prop = (items.get("properties") or {}).get(k)
                if prop is None:
                    continue
                kpath = _key(_child(_child(path, "items"), "properties"), k)
                if k not in required and prop.get("default") is None:
                    errors.append(
                        CRDError(
                            _child(kpath, "default"),
                            "list-type",
                            "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
                        )
                    )
                if prop.get("nullable") is True:
                    errors.append(
                        CRDError(
                            _child(kpath, "nullable"),
                            "list-type",
                            "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
                        )
                    )
    return errors


def _x_validations(node: dict, path: str) -> list[CRDError]:
    """validation.go: the form of x-kubernetes-validations rules (the CEL in them is not compiled here)."""
    errors = []
    for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
        rpath = _key(_child(path, "x-kubernetes-validations"), i)
        text = (rule.get("rule") or "").strip()
        message = rule.get("message") or ""
        if not text:
            errors.append(CRDError(_child(rpath, "rule"), "x-validations", "rule is not specified"))
        elif message and not message.strip():
            errors.append(
                CRDError(_child(rpath, "message"), "x-validations", "message must be non-empty if specified")
            )
        elif re.search(r"[\n\r]", message.strip()):
            errors.append(
                CRDError(_child(rpath, "message"), "x-validations", "message must not contain line breaks")
            )
        elif re.search(r"[\n\r]", text) and not message.strip():
            errors.append(
                CRDError(
                    _child(rpath, "message"),
                    "x-validations",
                    "message must be specified if rule contains line breaks",
                )
            )
        expr = rule.get("messageExpression") or ""
        if expr and not expr.strip():
            errors.append(
                CRDError(
                    _child(rpath, "messageExpression"),
                    "x-validations",
                    "messageExpression must be non-empty if specified",
                )
            )
        reason = rule.get("reason")
        if reason is not None and reason not in _SUPPORTED_VALIDATION_REASONS:
            errors.append(CRDError(_child(rpath, "reason"), "x-validations", f"Unsupported value {reason!r}"))
        fp = rule.get("fieldPath") or ""
        if fp and not fp.strip():
            errors.append(
                CRDError(
                    _child(rpath, "fieldPath"), "x-validations", "fieldPath must be non-empty if specified"
                )
            )
        if re.search(r"[\n\r]", fp):
            errors.append(
                CRDError(
                    _child(rpath, "fieldPath"), "x-validations", "fieldPath must not contain line breaks"
                )
            )
    return errors


# --- structural schemas: schema/validation.go, schema/complete.go -----------------------------------
_ROOT, _ITEM, _FIELD = "root", "item", "field"


def _structural_invariants(node: Any, level: str, path: str) -> list[CRDError]:
    """schema/validation.go validateStructuralInvariants."""
    if not isinstance(node, dict):
        return []
    errors: list[CRDError] = []
    t = node.get("type") or ""
    items = node.get("items")
    if t == "array" and items is None:
        errors.append(CRDError(_child(path, "items"), "array-items", "Required value: must be specified"))
    if isinstance(items, dict):
        errors += _structural_invariants(items, _ITEM, _child(path, "items"))
    props = node.get("properties") or {}
    for name, sub in props.items():
        errors += _structural_invariants(sub, _FIELD, _key(_child(path, "properties"), name))
    ap = node.get("additionalProperties")
    if ap is not None:
        if level == _ROOT:
            errors.append(
                CRDError(
                    _child(path, "additionalProperties"),
                    "additionalProperties-root",
                    "must not be used at the root",
                )
            )
        if isinstance(ap, dict):
            errors += _structural_invariants(ap, _FIELD, _child(path, "additionalProperties"))

    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    embedded = node.get("x-kubernetes-embedded-resource") is True
    # validateExtensions
    if int_or_string and preserve:
        errors.append(
            CRDError(
                _child(path, "x-kubernetes-preserve-unknown-fields"),
                "int-or-string",
                "must be false if x-kubernetes-int-or-string is true",
            )
        )
    if int_or_string and embedded:
        errors.append(
            CRDError(
                _child(path, "x-kubernetes-embedded-resource"),
                "int-or-string",
                "must be false if x-kubernetes-int-or-string is true",
            )
        )
    # validateValueValidation, with the two IntOrString exceptions
    skip_any_of = node.get("anyOf") == _INT_OR_STRING_ANY_OF
    all_of = node.get("allOf") or []
    skip_first_all_of_any_of = (
        bool(all_of) and isinstance(all_of[0], dict) and all_of[0].get("anyOf") == _INT_OR_STRING_ANY_OF
    )
    errors += _value_validation(node, skip_any_of, skip_first_all_of_any_of, level, path)

    check_metadata = level == _ROOT or embedded
    if embedded and t != "object":
        errors.append(
            CRDError(
                _child(path, "type"),
                "embedded-resource",
                "must be object if x-kubernetes-embedded-resource is true",
            )
        )
    elif not t and not int_or_string and not preserve:
        where = {
            _ROOT: "at the root",
            _ITEM: "for specified array items",
            _FIELD: "for specified object fields",
        }[level]
        errors.append(
            CRDError(_child(path, "type"), "type-required", f"Required value: must not be empty {where}")
        )
    if embedded and ap is not None:
        errors.append(
            CRDError(
                _child(path, "additionalProperties"),
                "embedded-resource",
                "must not be used if x-kubernetes-embedded-resource is set",
            )
        )
    if level == _ROOT and t and t != "object":
        errors.append(
            CRDError(_child(path, "type"), "root-type", f"Invalid value {t!r}: must be object at the root")
        )
    for meta in ("kind", "apiVersion"):
        if meta in props and check_metadata and props[meta].get("type") != "string":
            errors.append(
                CRDError(
                    _child(_key(_child(path, "properties"), meta), "type"), "meta-types", "must be string"
                )
            )
    if "metadata" in props:
        errors += _metadata_invariants(
            props["metadata"], check_metadata, level, _key(_child(path, "properties"), "metadata")
        )
    if embedded and not preserve and not props:
        errors.append(
            CRDError(
                _child(path, "properties"),
                "embedded-resource",
                "Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
            )
        )
    return errors


def _metadata_invariants(meta: dict, check_metadata: bool, level: str, path: str) -> list[CRDError]:
    """schema/validation.go validateStructuralMetadataInvariants."""
    errors = []
    if check_metadata and meta.get("type") != "object":
        errors.append(CRDError(_child(path, "type"), "meta-types", "must be object"))
    if level == _ROOT:
        rest = dict(meta)
        props = set(rest.get("properties") or {})
        if props and props <= {"name", "generateName"}:
            rest.pop("properties")
        rest.pop("type", None)
        rest.pop("default", None)
        # NewStructural does not keep externalDocs and example (schema/convert.go)
        rest = {k: v for k, v in rest.items() if k not in ("externalDocs", "example") and not _is_zero(k, v)}
        if rest:
            errors.append(
                CRDError(
                    path,
                    "metadata-restricted",
                    f"Forbidden: must not specify anything other than name and generateName, but metadata is "
                    f"implicitly specified (found {sorted(rest)})",
                )
            )
    return errors


_NESTED_FORBIDDEN_TRUE = {
    "nullable": "must be false to be structural",
    "x-kubernetes-preserve-unknown-fields": "must be false to be structural",
    "x-kubernetes-embedded-resource": "must be false to be structural",
    "x-kubernetes-int-or-string": "must be false to be structural",
}


def _value_validation(
    node: dict, skip_any_of: bool, skip_first_all_of_any_of: bool, level: str, path: str
) -> list[CRDError]:
    """schema/validation.go validateValueValidation."""
    errors: list[CRDError] = []
    if not skip_any_of:
        for i, sub in enumerate(node.get("anyOf") or []):
            errors += _nested_value_validation(sub, False, level, _key(_child(path, "anyOf"), i))
    for i, sub in enumerate(node.get("allOf") or []):
        errors += _nested_value_validation(
            sub, skip_first_all_of_any_of and i == 0, level, _key(_child(path, "allOf"), i)
        )
    for i, sub in enumerate(node.get("oneOf") or []):
        errors += _nested_value_validation(sub, False, level, _key(_child(path, "oneOf"), i))
    if isinstance(node.get("not"), dict):
        errors += _nested_value_validation(node["not"], False, level, _child(path, "not"))
    pattern = node.get("pattern")
    if pattern:
        problem = _re2_problem(pattern)
        if problem:
            errors.append(
                CRDError(
                    _child(path, "pattern"),
                    "pattern",
                    f"Invalid value {pattern!r}: must be a valid regular expression, but isn't: {problem}",
                )
            )
    return errors


def _re2_problem(pattern: str) -> str | None:
    """Python's re as a stand-in for Go's regexp (RE2), refusing what RE2 does not support."""
    try:
        re.compile(pattern)
    except re.error as e:
        return str(e)
    for construct, what in (
        (r"\(\?=|\(\?!|\(\?<=|\(\?<!", "look-around"),
        (r"(?<!\\)\\[1-9]|\(\?P=", "back-reference"),
        (r"\(\?>", "atomic group"),
    ):
        if re.search(construct, pattern):
            return f"RE2 does not support {what}"
    return None


def _nested_value_validation(node: Any, skip_any_of: bool, level: str, path: str) -> list[CRDError]:
    """schema/validation.go validateNestedValueValidation (with ValidateStructural's options: no nested
    additionalProperties, no nested x-kubernetes-validations)."""
    if not isinstance(node, dict):
        return []
    errors = _value_validation(node, skip_any_of, False, level, path)
    if isinstance(node.get("items"), dict):
        errors += _nested_value_validation(node["items"], False, level, _child(path, "items"))
    for name, sub in (node.get("properties") or {}).items():
        errors += _nested_value_validation(sub, False, _FIELD, _key(_child(path, "properties"), name))
    forbid = "nested-value-validation"
    if node.get("type"):
        errors.append(CRDError(_child(path, "type"), forbid, "must be empty to be structural"))
    if node.get("additionalProperties") is not None:
        errors.append(
            CRDError(_child(path, "additionalProperties"), forbid, "must be undefined to be structural")
        )
    if node.get("default") is not None:
        errors.append(CRDError(_child(path, "default"), forbid, "must be undefined to be structural"))
    for key in ("title", "description"):
        if node.get(key):
            errors.append(CRDError(_child(path, key), forbid, "must be empty to be structural"))
    for key, detail in _NESTED_FORBIDDEN_TRUE.items():
        if node.get(key) is True:
            errors.append(CRDError(_child(path, key), forbid, detail))
    if node.get("x-kubernetes-list-map-keys"):
        errors.append(
            CRDError(_child(path, "x-kubernetes-list-map-keys"), forbid, "must be empty to be structural")
        )
    for key in ("x-kubernetes-list-type", "x-kubernetes-map-type"):
        if node.get(key) is not None:
            errors.append(CRDError(_child(path, key), forbid, "must be undefined to be structural"))
    if node.get("x-kubernetes-validations"):
        errors.append(
            CRDError(_child(path, "x-kubernetes-validations"), forbid, "must be empty to be structural")
        )
    if "metadata" in (node.get("properties") or {}):
        errors.append(
            CRDError(
                _key(_child(path, "properties"), "metadata"),
                forbid,
                "must not be specified in a nested context",
            )
        )
    return errors


def _completeness(schema: dict, path: str) -> list[CRDError]:
    """schema/complete.go validateStructuralCompleteness: starts at the root's value validations, as the source."""
    return _value_validation_completeness(schema, schema, path, path)


def _value_validation_completeness(v: dict, s: dict | None, s_path: str, v_path: str) -> list[CRDError]:
    errors: list[CRDError] = []
    if isinstance(v.get("not"), dict):
        errors += _nested_completeness(v["not"], s, s_path, _child(v_path, "not"))
    for junctor in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(v.get(junctor) or []):
            errors += _nested_completeness(sub, s, s_path, _key(_child(v_path, junctor), i))
    return errors


def _nested_completeness(v: Any, s: dict | None, s_path: str, v_path: str) -> list[CRDError]:
    if not isinstance(v, dict):
        return []
    if s is None:
        return [CRDError(s_path, "completeness", f"Required value: because it is defined in {v_path}")]
    errors = _value_validation_completeness(v, s, s_path, v_path)
    if isinstance(v.get("items"), dict):
        s_items = s.get("items") if isinstance(s.get("items"), dict) else None
        errors += _nested_completeness(v["items"], s_items, _child(s_path, "items"), _child(v_path, "items"))
    s_props = s.get("properties") or {}
    for name, sub in (v.get("properties") or {}).items():
        if name not in s_props:
            errors.append(
                CRDError(
                    _key(_child(s_path, "properties"), name),
                    "completeness",
                    f"Required value: because it is defined in {_key(_child(v_path, 'properties'), name)}",
                )
            )
        else:
            errors += _nested_completeness(
                sub,
                s_props[name],
                _key(_child(s_path, "properties"), name),
                _key(_child(v_path, "properties"), name),
            )
    return errors


# --- pruning and defaults: schema/pruning/algorithm.go, schema/defaulting/validation.go --------------
def _prune(x: Any, s: dict | None, path: str, removed: list[str]) -> None:
    """schema/pruning/algorithm.go prune, recording the paths it deletes."""
    if s is not None and s.get("x-kubernetes-preserve-unknown-fields") is True:
        _skip_prune(x, s, path, removed)
        return
    if isinstance(x, dict):
        if s is None:
            removed += [f"{path}.{k}" for k in x]
            x.clear()
            return
        props = s.get("properties") or {}
        for k in list(x):
            if s.get("x-kubernetes-embedded-resource") is True and k in _META_FIELDS:
                continue
            if k in props:
                _prune(x[k], props[k], f"{path}.{k}", removed)
            elif s.get("additionalProperties") is not None:
                ap = s["additionalProperties"]
                _prune(x[k], ap if isinstance(ap, dict) else None, f"{path}.{k}", removed)
            else:
                removed.append(f"{path}.{k}")
                del x[k]
    elif isinstance(x, list):
        items = s.get("items") if s is not None and isinstance(s.get("items"), dict) else None
        for i, v in enumerate(x):
            _prune(v, items, f"{path}[{i}]", removed)


def _skip_prune(x: Any, s: dict | None, path: str, removed: list[str]) -> None:
    if s is None:
        return
    if isinstance(x, dict):
        props = s.get("properties") or {}
        for k in list(x):
            if s.get("x-kubernetes-embedded-resource") is True and k in _META_FIELDS:
                continue
            if k in props:
                _prune(x[k], props[k], f"{path}.{k}", removed)
            elif s.get("additionalProperties") is not None:
                ap = s["additionalProperties"]
                _prune(x[k], ap if isinstance(ap, dict) else None, f"{path}.{k}", removed)
    elif isinstance(x, list):
        items = s.get("items") if isinstance(s.get("items"), dict) else None
        for i, v in enumerate(x):
            _skip_prune(v, items, f"{path}[{i}]", removed)


def prune(obj: Any, schema: dict, is_resource_root: bool = True) -> tuple[Any, list[str]]:
    """``pruning.Prune`` on a copy of ``obj``: the pruned copy and the paths of the fields it dropped
    (``.spec.stratgy``). For a resource root, apiVersion/kind/metadata are kept as for an embedded resource."""
    s = dict(schema)
    if is_resource_root:
        s["x-kubernetes-embedded-resource"] = True
    out = copy.deepcopy(obj)
    removed: list[str] = []
    _prune(out, s, "", removed)
    return out, sorted(removed)


def unknown_fields(obj: Any, schema: dict) -> list[str]:
    """What the apiserver's strict field validation (``kubectl apply``'s default ``--validate=strict``)
    reports for a custom object: ``unknown field "spec.stratgy"`` for every field pruning would drop."""
    return [f'unknown field "{p.lstrip(".")}"' for p in prune(obj, schema)[1]]


def _to_draft4(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON-Schema draft 4 for jsonschema: ``nullable`` as a null type."""
    if isinstance(node, list):
        return [_to_draft4(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: ({n: _to_draft4(v) for n, v in value.items()} if k == "properties" else _to_draft4(value))
        for k, value in node.items()
        if k not in ("default", "example")
    }
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _validate_defaults(schema: dict, path: str) -> list[CRDError]:
    """schema/defaulting/validation.go ValidateDefaults(isResourceRoot=true, requirePrunedDefaults=true)."""
    root = dict(schema)
    root["x-kubernetes-embedded-resource"] = True
    return _defaults(root, path, inside_meta=False)


def _defaults(s: Any, path: str, inside_meta: bool) -> list[CRDError]:
    import jsonschema

    if not isinstance(s, dict):
        return []
    embedded = s.get("x-kubernetes-embedded-resource") is True
    if embedded:
        inside_meta = False
    errors: list[CRDError] = []
    default = s.get("default")
    if default is not None and not inside_meta:  # defaults inside metadata are not checked (module docstring)
        pruned, removed = prune(default, s, is_resource_root=embedded)
        if pruned != default:
            errors.append(
                CRDError(
                    _child(path, "default"), "default-pruned", f"must not have unknown fields: {removed}"
                )
            )
        validator = jsonschema.Draft4Validator(_to_draft4(s))
        for e in validator.iter_errors(default):
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path)
            errors.append(CRDError(_child(path, "default") + where, "default-invalid", e.message))
    # do not follow additionalProperties (as the source)
    if isinstance(s.get("items"), dict):
        errors += _defaults(s["items"], _child(path, "items"), inside_meta)
    for name, sub in (s.get("properties") or {}).items():
        sub_inside = inside_meta or (embedded and name in _META_FIELDS)
        errors += _defaults(sub, _key(_child(path, "properties"), name), sub_inside)
    return errors
