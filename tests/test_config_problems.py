"""A RunConfigError carries each problem as a path in the run config and a kind, besides its
message: what the GraphQL API answers as Dagster's typed config errors, without reading the
message back."""

from __future__ import annotations

from typing import Any

import pytest

import tidegate as tg
from tests.test_run_config import _OK, _defs
from tidegate.errors import ConfigProblem


class Rate(tg.Config):
    rate: float


@tg.op
def scale(config: Rate) -> float:
    return config.rate


@tg.graph
def inner() -> None:
    scale()


@tg.job
def nested_job() -> None:
    inner()


@pytest.mark.parametrize(
    ("run_config", "expected"),
    [
        (None, [(("ops", "greeting", "config", "person_name"), "missing")]),
        (
            {"ops": {"greeting": {"config": {"person_name": 1, "times": "many", "colour": "red"}}}},
            [
                (("ops", "greeting", "config", "person_name"), "type_mismatch"),
                (("ops", "greeting", "config", "times"), "type_mismatch"),
                (("ops", "greeting", "config", "colour"), "not_defined"),
            ],
        ),
        ({"ops": {"greting": {"config": {}}}}, [(("ops", "greting"), "not_defined")]),
        ({"ops": {**_OK, "plain": {"config": {"x": 1}}}}, [(("ops", "plain"), "not_defined")]),
        ({"ops": {"greeting": 5}}, [(("ops", "greeting"), "type_mismatch")]),
        ({"ops": {"greeting": {"confg": {}}}}, [(("ops", "greeting", "confg"), "not_defined")]),
        (
            {"ops": _OK, "resources": {"mailer": {"config": {"senderr": "x"}}}},
            [(("resources", "mailer", "config", "senderr"), "not_defined")],
        ),
        (
            {"ops": _OK, "resources": {"mailer": {"config": {"sender": 5}}}},
            [(("resources", "mailer", "config", "sender"), "type_mismatch")],
        ),
        ({"ops": _OK, "resources": {"warehouse": {"config": {}}}}, [(("resources", "warehouse"), "not_defined")]),
        ({"execution": {}}, [(("execution",), "not_defined")]),
    ],
)
def test_each_problem_has_its_path_and_kind(run_config: Any, expected: list[tuple[tuple[str, ...], str]]) -> None:
    with pytest.raises(tg.RunConfigError) as info:
        _defs().plan("greet_job", run_config=run_config)
    assert [(p.path, p.kind) for p in info.value.problems] == expected


def test_a_nested_graphs_op_is_reached_through_its_graphs_ops() -> None:
    bad = {"ops": {"inner": {"ops": {"scale": {"config": {"rate": "fast"}}}}}}
    with pytest.raises(tg.RunConfigError) as info:
        tg.validate_run_config(nested_job, bad)
    assert info.value.problems == (ConfigProblem(("ops", "inner", "ops", "scale", "config", "rate"), "type_mismatch"),)
    assert tg.validate_run_config(nested_job, {"ops": {"inner": {"ops": {"scale": {"config": {"rate": 2}}}}}})


def test_malformed_config_as_a_whole_names_no_field() -> None:
    with pytest.raises(tg.RunConfigError) as info:
        _defs().plan("greet_job", run_config=["not", "a", "mapping"])
    assert info.value.problems == ()
    assert "run config must be a RunConfig or a dict" in str(info.value)
