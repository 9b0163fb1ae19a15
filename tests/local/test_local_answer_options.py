"""``dataset.labelFormat`` and ``evaluation.decoding``: validated by the spec, passed by the planner
to exactly the steps they change (prepare; the ERC stage's dev evaluation; the test step)."""

from __future__ import annotations

import pytest
from coe_controller.planner import plan
from coe_controller.spec import parse_spec, spec_json_schema

from coe_runtime.errors import ConfigError

ALL_CONTINUE = {1: {"continue": True}, 2: {"continue": True}}


def _spec(**spec):
    spec.setdefault("store", "s3://bucket/runs")
    spec.setdefault("steer", {"rounds": 2})
    return parse_spec(
        {"apiVersion": "coe.ml/v1alpha1", "kind": "CoEExperiment", "metadata": {"name": "exp"}, "spec": spec}
    )


def _steps(**spec):
    return {s.name: s.config for s in plan(_spec(**spec), ALL_CONTINUE)}


def test_defaults_are_tag_and_generate():
    s = _spec().spec
    assert s.dataset.label_format == "tag" and s.evaluation.decoding == "generate"
    steps = _steps()
    assert steps["prepare"].label_format == "tag"
    assert (steps["erc"].label_format, steps["erc"].decoding) == ("tag", "generate")
    assert (steps["test"].label_format, steps["test"].decoding) == ("tag", "generate")


def test_camel_case_options_validate_and_bad_values_are_named():
    s = _spec(dataset={"labelFormat": "word"}, evaluation={"decoding": "score"}).spec
    assert s.dataset.label_format == "word" and s.evaluation.decoding == "score"
    with pytest.raises(ConfigError) as e:
        _spec(dataset={"labelFormat": "json"}, evaluation={"decoding": "beam"})
    assert "spec.dataset.labelFormat" in str(e.value) and "spec.evaluation.decoding" in str(e.value)
    assert "2 problem(s)" in str(e.value)


def test_json_schema_describes_both_options():
    defs = spec_json_schema()["$defs"]
    fmt = defs["DatasetSpec"]["properties"]["labelFormat"]
    dec = defs["EvaluationSpec"]["properties"]["decoding"]
    assert fmt["enum"] == ["tag", "word"] and fmt["default"] == "tag" and fmt["description"]
    assert dec["enum"] == ["generate", "score"] and dec["default"] == "generate" and dec["description"]


def test_planner_passes_the_options_to_prepare_erc_and_test():
    steps = _steps(dataset={"labelFormat": "word"}, evaluation={"decoding": "score"})
    assert steps["prepare"].label_format == "word"
    assert (steps["erc"].label_format, steps["erc"].decoding) == ("word", "score")
    assert (steps["test"].label_format, steps["test"].decoding) == ("word", "score")
    # Stages without a dev evaluation keep the defaults (their identity does not depend on it).
    for name in ("roleplay", "speaker-id", "steer-r1-train", "steer-r2-train"):
        assert (steps[name].label_format, steps[name].decoding) == ("tag", "generate"), name


def test_decoding_changes_only_the_steps_that_decode():
    before = {n: c.fingerprint for n, c in _steps().items()}
    after = {n: c.fingerprint for n, c in _steps(evaluation={"decoding": "score"}).items()}
    assert {n for n in before if before[n] != after[n]} == {"erc", "test"}


def test_label_format_reaches_prepare_but_not_the_clues_step():
    clues = {"source": "generate"}
    before = _steps(clues=clues)
    after = _steps(clues=clues, dataset={"labelFormat": "word"})
    assert after["clues"].fingerprint == before["clues"].fingerprint  # clue writing is unaffected
    assert after["prepare"].fingerprint != before["prepare"].fingerprint
    assert "label_format" not in after["clues"].dataset.model_dump()
