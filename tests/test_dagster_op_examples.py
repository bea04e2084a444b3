"""Dagster's documented op-job, graph and dynamic-graph examples
(tests/projects/dagster_examples/op_jobs.py, only the import line changed), run with
``execute_in_process`` through the same step code the workers run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tidegate.names import StepStatus

EXAMPLE = Path(__file__).parent / "projects" / "dagster_examples" / "op_jobs.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dagster_example_op_jobs", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_job_decorator_example(example: ModuleType) -> None:
    result = example.do_stuff.execute_in_process()
    assert result.success
    assert result.output_for_node("add_one") == 6


def test_graph_to_job_with_config(example: ModuleType) -> None:
    result = example.do_it_all_job.execute_in_process()
    assert result.output_for_node("do_something") == 2
    assert "config_param: 2" in [e.message for e in result.all_events if e.event_type == "LOG"]


def test_fan_in_and_branching_graphs(example: ModuleType) -> None:
    result = example.inputs_and_outputs.to_job().execute_in_process()
    assert result.output_for_node("adder") == 4
    assert {s.step_key for s in result.steps} == {"return_one", "add_one_to", "add_one_to_2", "adder"}
    branching = example.branching.to_job().execute_in_process()
    assert branching.success
    statuses = {s.step_key: s.status for s in branching.steps}
    assert statuses["branch_1_op"] == StepStatus.SUCCEEDED
    assert statuses["branch_2_op"] == StepStatus.SKIPPED


def test_nested_and_unnested_graphs_compute_the_same(example: ModuleType) -> None:
    flat = example.all_together_unnested.execute_in_process()
    nested = example.all_together_nested.execute_in_process()
    assert flat.output_for_node("add_thirty_two") == nested.output_for_node("celsius_to_fahrenheit.add_thirty_two")
    assert "celsius_to_fahrenheit.multiply_by_one_point_eight" in {s.step_key for s in nested.steps}
    logs = [e.message for e in nested.all_events if e.event_type == "LOG"]
    assert logs == ["number: 122.0"]


def test_dynamic_graph_example(example: ModuleType) -> None:
    result = example.dynamic_graph.execute_in_process()
    assert result.success
    assert result.output_for_node("merge_and_analyze") == sum(range(10))
    assert sorted(result.output_for_node("compute_piece")) == [f"piece_{i}" for i in (0, 2, 4, 6, 8)]
    assert example.defs.get_job("dynamic_graph").kind == "ops"
