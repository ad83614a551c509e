"""What a pair run is, as one typed value: `PairSpec`, shared by the parameter-file validation,
the pair notebook and `analysis.score_pair`.

A parameter file's `parameters:` block (flat, as papermill passes it) becomes a spec with
`PairSpec.from_params`; `PairSpec.errors(params)` lists what is wrong without raising. Selection
hyper-parameters live in `SelectionSpec` (their one home). To add an option: add a field with a
default (and, if it needs one, a check in `CHECKS`); parsing, validation and the notebook's
`spec.to_params()` pick it up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from helpers.backend import BACKENDS, Local, get_backend
from helpers.evaluation.selection import SelectionSpec

# flat parameter names of the selection fields (the notebook's names) -> SelectionSpec fields
SELECTION_KEYS: dict[str, str] = {
    "n_questions": "n",
    "beta": "beta",
    "gamma": "gamma",
    "delta": "delta",
    "seed": "seed",
    "reference": "reference",
    "short_answers": "short_answers",
}
# a notebook's parameter names that differ from the spec's field names
ALIASES: dict[str, str] = {"remote": "backend", "dataset": "task"}


class SpecError(ValueError):
    """An invalid spec; `problems` lists each failed check."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid pair spec: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class PairSpec:
    """One base/tuned pair analysis: models, task and generation, selection, attribution, stats."""

    pair: str
    base: str
    tuned: str
    algorithm: str = ""
    base_revision: str | None = None
    tuned_revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "float32"
    backend: str = "local"  # local | ndif | ndif-local (a file's `remote: true` means ndif)
    task: str = "organisms"
    template: str | None = None  # None: the task's own format
    data_path: str | None = None
    n_items: int | None = 500
    max_new_tokens: int = 96
    gen_batch_size: int | None = None  # None: the memory planner picks
    alphas: tuple[float, ...] = (0.1, 0.3, 0.5)
    focus_alpha: float = 0.3
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    positions: str = "all"
    eap_chunk: int | None = None  # None: the memory planner picks
    n_boot: int = 2000
    bins: int = 100
    controls: tuple[str, ...] | None = None  # None: every control (helpers.controls.CONTROLS)
    tuned_seeds: tuple[str, ...] = ()  # more seeds of the tuned model, pooled with `tuned`
    token_profile: int = 16  # questions in the per-answer-token decomposition (0: none)

    def __post_init__(self) -> None:
        problems = check_fields(self)
        if problems:
            raise SpecError(problems)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PairSpec:
        """The spec of a flat parameter mapping (a parameter file's block or notebook globals);
        unknown keys raise, naming the known ones."""
        return cls(**_split(params))

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any]) -> PairSpec:
        """The spec of a notebook's parameters: the names in `namespace` (its `globals()`) that
        are pair parameters; everything else there is ignored."""
        return cls.from_params({k: v for k, v in namespace.items() if k in parameter_names()})

    @classmethod
    def errors(cls, params: Mapping[str, Any]) -> list[str]:
        """What is wrong with `params` as a pair spec (empty when it is valid)."""
        try:
            cls.from_params({"pair": "?", "base": "?", "tuned": "?", **params})
        except SpecError as err:
            return err.problems
        except (TypeError, ValueError) as err:
            return [str(err)]
        return []

    def to_params(self) -> dict[str, Any]:
        """The flat parameters (the notebook's names) of this spec, for result files."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "selection"}
        out["alphas"] = list(self.alphas)
        out["tuned_seeds"] = list(self.tuned_seeds)
        out["controls"] = None if self.controls is None else list(self.controls)
        for flat, name in SELECTION_KEYS.items():
            out[flat] = getattr(self.selection, name)
        return out

    def replace(self, **changes: Any) -> PairSpec:
        """A copy with `changes` (flat names, as in `from_params`)."""
        return PairSpec.from_params({**self.to_params(), **changes})

    def control_names(self) -> list[str]:
        """The controls this pair is scored under, in the report's order."""
        from helpers.controls import CONTROLS, check_controls

        return list(CONTROLS) if self.controls is None else check_controls(list(self.controls))

    def execution(self) -> Local:
        """The execution backend this pair runs on."""
        return get_backend(self.backend)

    def evaluation_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `analysis.evaluate_pair` for this spec."""
        return {
            "task": self.task,
            "template": self.template,
            "max_new_tokens": self.max_new_tokens,
            "n_items": self.n_items,
            "data_path": self.data_path,
            "batch_size": self.gen_batch_size,
            "names": (self.base, self.tuned),
            "backend": self.execution(),
            "revisions": (self.base_revision, self.tuned_revision),
        }


def _split(params: Mapping[str, Any]) -> dict[str, Any]:
    """Flat parameters -> PairSpec keyword arguments (selection fields grouped, aliases mapped)."""
    known = {f.name for f in fields(PairSpec)} - {"selection"}
    out: dict[str, Any] = {}
    selection: dict[str, Any] = {}
    unknown = []
    for key, value in params.items():
        if key in SELECTION_KEYS:
            selection[SELECTION_KEYS[key]] = value
        elif key == "remote":
            out["backend"] = value if isinstance(value, str) else ("ndif" if value else "local")
        elif key in ALIASES:
            out[ALIASES[key]] = value
        elif key in known:
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        names = sorted(known | set(SELECTION_KEYS) | set(ALIASES))
        raise ValueError(f"unknown parameters {unknown}; a pair takes {', '.join(names)}")
    for key in ("alphas", "controls", "tuned_seeds"):
        if isinstance(out.get(key), list | tuple):
            out[key] = tuple(out[key])
    out["selection"] = SelectionSpec(**selection)
    return out


def _alphas(spec: PairSpec) -> str | None:
    ok = spec.alphas and all(
        isinstance(a, int | float) and not isinstance(a, bool) and 0 < a <= 1 for a in spec.alphas
    )
    return (
        None if ok else f"alphas must be a non-empty list of numbers in (0, 1], got {spec.alphas}"
    )


def _controls(spec: PairSpec) -> str | None:
    if spec.controls is None:
        return None
    try:
        spec.control_names()
    except ValueError as err:
        return str(err)
    return None if spec.controls else "controls must name at least one control (or be null: all)"


def _seeds(spec: PairSpec) -> str | None:
    ok = (
        all(isinstance(s, str) and s for s in spec.tuned_seeds)
        and spec.tuned not in spec.tuned_seeds
    )
    return (
        None
        if ok
        else (
            f"tuned_seeds must be a list of model references other than tuned, got {spec.tuned_seeds}"
        )
    )


def _count(name: str) -> Callable[[PairSpec], str | None]:
    def check(spec: PairSpec) -> str | None:
        value = getattr(spec, name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return None
        return f"{name} must be an integer >= 0 (a number of questions), got {value!r}"

    return check


def _positive(name: str, optional: bool = False) -> Callable[[PairSpec], str | None]:
    def check(spec: PairSpec) -> str | None:
        value = getattr(spec, name)
        if optional and value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return None
        return f"{name} must be a positive integer{' or null' if optional else ''}, got {value!r}"

    return check


def _choice(
    name: str, choices: Callable[[], Any], *, label: str | None = None, optional: bool = False
) -> Callable[[PairSpec], str | None]:
    def check(spec: PairSpec) -> str | None:
        value = getattr(spec, name)
        if optional and value is None:
            return None
        known = list(choices())
        if value in known:
            return None
        return f"{label or name} {value!r} unknown; choose one of {known}"

    return check


def _tasks() -> tuple[str, ...]:
    from helpers.evaluation import task_names

    return task_names()


def _templates() -> list[str]:
    from helpers import plugins
    from helpers.evaluation import TEMPLATES

    plugins.load()
    return sorted(TEMPLATES)


def _dtypes() -> list[str]:
    from helpers.planning import DTYPE_BYTES

    return list(DTYPE_BYTES)


CHECKS: dict[str, Callable[[PairSpec], str | None]] = {
    "alphas": _alphas,
    "controls": _controls,
    "tuned_seeds": _seeds,
    "token_profile": _count("token_profile"),
    "max_new_tokens": _positive("max_new_tokens"),
    "n_items": _positive("n_items", optional=True),
    "gen_batch_size": _positive("gen_batch_size", optional=True),
    "eap_chunk": _positive("eap_chunk", optional=True),
    "n_boot": _positive("n_boot"),
    "bins": _positive("bins"),
    "task": _choice("task", _tasks, label="dataset"),
    "template": _choice("template", _templates, optional=True),
    "dtype": _choice("dtype", _dtypes),
    "backend": _choice("backend", lambda: BACKENDS),
    "positions": _choice("positions", lambda: ("all", "labelled")),
}


def check_fields(spec: PairSpec) -> list[str]:
    """Every failed check of `spec`, as messages that name the fix."""
    return [problem for check in CHECKS.values() if (problem := check(spec))]


def parameter_names() -> set[str]:
    """Every flat parameter name `PairSpec.from_params` accepts."""
    names = {f.name for f in dataclasses.fields(PairSpec)} - {"selection"}
    return names | set(SELECTION_KEYS) | set(ALIASES)
