"""PairSpec and SelectionSpec: one home of the run options, shared by files, notebooks and code."""

from __future__ import annotations

import dataclasses

import nbformat
import pytest
import yaml

from helpers.evaluation import get_task
from helpers.evaluation.selection import SelectionSpec, select_questions
from helpers.paths import layout
from helpers.specs import PairSpec, parameter_names

PAIR = {"pair": "p", "base": "organism:base", "tuned": "organism:grpo"}


def test_flat_parameters_become_a_typed_spec_and_back() -> None:
    spec = PairSpec.from_params({**PAIR, "n_questions": 7, "beta": 0.2, "remote": True})
    assert spec.selection == SelectionSpec(n=7, beta=0.2)
    assert spec.backend == "ndif" and spec.execution().name == "ndif"
    assert spec.alphas == (0.1, 0.3, 0.5)
    again = PairSpec.from_params(spec.to_params())
    assert again == spec
    assert spec.replace(alphas=[0.2]).alphas == (0.2,)


def test_errors_name_each_bad_option_and_unknown_keys() -> None:
    problems = PairSpec.errors({"alphas": [0, 2], "dataset": "mnist", "template": "nope"})
    assert len(problems) == 3
    assert any("alphas must be" in p for p in problems)
    assert any("dataset 'mnist' unknown" in p for p in problems)
    assert any("template 'nope' unknown" in p for p in problems)
    (unknown,) = PairSpec.errors({"alpha": 0.3})
    assert "unknown parameters ['alpha']" in unknown and "alphas" in unknown
    with pytest.raises(ValueError, match="reference must be"):
        PairSpec.from_params({**PAIR, "reference": "mean"})


def test_every_committed_pair_file_is_a_valid_spec() -> None:
    files = [yaml.safe_load(p.read_text()) for p in sorted(layout().params.glob("*.yml"))]
    pairs = [f for f in files if f["notebook"] == "pair_analysis"]
    assert len(pairs) >= 11
    for f in pairs:
        PairSpec.from_params({**f["parameters"], "remote": f.get("remote", False)})


def test_the_pair_notebook_defaults_are_the_spec_defaults() -> None:
    """The template's parameters cell and PairSpec agree, so a page run on defaults is the spec."""
    nb = nbformat.read(layout().notebooks / "pair_analysis.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    namespace: dict = {}
    exec(cell.source, namespace)  # noqa: S102 - the template's own literal parameters
    spec = PairSpec.from_namespace(namespace)
    default = PairSpec(pair=spec.pair, base=spec.base, tuned=spec.tuned)
    different = {
        f.name
        for f in dataclasses.fields(PairSpec)
        if getattr(spec, f.name) != getattr(default, f.name)
    }
    assert different <= {"algorithm", "template"}, different
    assert spec.template in (None, get_task(spec.task).template)  # the task's own format
    assert set(namespace) - {"__builtins__"} <= parameter_names()


def test_select_questions_defaults_come_from_selection_spec() -> None:
    import inspect

    params = inspect.signature(select_questions).parameters
    spec = SelectionSpec()
    for name in ("n", "beta", "gamma", "delta", "seed", "reference", "short_answers"):
        assert params[name].default == getattr(spec, name)
