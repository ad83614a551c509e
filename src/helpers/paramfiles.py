"""Strict validation of one parameter file, run before every execution (not only `--dry-run`).

A parameter file may hold plain data only: YAML scalars, lists and mappings whose keys are Python
identifiers, so nothing but a value can reach papermill's injected parameters cell. Its keys are
checked against what the runner reads (top level) and what the template declares (its parameters
cell), with a "did you mean" for near misses; values against the type of the template's default
and the ranges below; `output` and `inputs` are resolved and must stay inside the repository;
a template that publishes results (it declares `pair`) needs `pair` equal to the file's name, so
two files can never share a results folder; a local model path that does not exist is named.
Every error names the file, the key and the fix.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

TOP_LEVEL: dict[str, tuple[type, ...]] = {
    "notebook": (str,),
    "output": (str,),
    "parameters": (dict,),
    "inputs": (list,),
    "stage": (int,),
    "requires_gpu": (bool,),
    "remote": (bool,),
    "title": (str,),
    "model_config": (dict,),
    "planning": (dict,),
    "notes": (str,),
}
REQUIRED = ("notebook", "output")
# Parameters whose template default is a value but which also accept None (the comment in the
# template says what None means).
NULLABLE = frozenset({"n_items", "data_path", "gen_batch_size", "eap_chunk"})
# Ranges and choices of the other templates' parameters (a pair page's are PairSpec's checks):
# (low, high, low inclusive); a list parameter is checked element by element.
RANGES: dict[str, tuple[float, float, bool]] = {
    "n_items": (1, math.inf, True),
    "n_questions": (2, math.inf, True),
    "n_boot": (1, math.inf, True),
    "bins": (1, math.inf, True),
    "max_new_tokens": (1, math.inf, True),
    "gen_batch_size": (1, math.inf, True),
    "eap_chunk": (1, math.inf, True),
    "alphas": (0, 1, False),
    "alpha": (0, 1, False),
    "focus_alpha": (0, 1, False),
    "beta": (0, math.inf, False),
    "gamma": (0, math.inf, False),
    "delta": (0, math.inf, False),
    "seed": (0, math.inf, True),
    "scales": (0, 1, False),
    "top_k": (1, math.inf, True),
    "knockout_alpha": (0, 1, False),
    "removal_scale": (0, 1, False),
    "ig_steps": (1, math.inf, True),
    "n_problems": (1, math.inf, True),
    "k_points": (1, math.inf, True),
    "n_random": (1, math.inf, True),
    "n_grown": (1, math.inf, True),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("float32", "bfloat16", "float16"),
    "positions": ("all", "labelled"),
    "reference": ("code", "paper"),
    "ablation_baseline": ("zero", "mean"),
}
MODEL_KEYS = ("base", "tuned", "model_ref", "base_ref", "tuned_ref", "tuned_seeds")
ORGANISM_PREFIX = "organism:"
KIND = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
        list: "a list", dict: "a mapping"}  # fmt: skip


class ParamFileError(ValueError):
    """A parameter file is not valid; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class CheckedFile:
    """A validated parameter file: its spec (as read) and the resolved paths it names."""

    path: Path
    spec: dict[str, Any]
    template: Path
    output: Path
    inputs: list[Path] = field(default_factory=list)

    @property
    def parameters(self) -> dict[str, Any]:
        """The notebook parameters, with `remote: true` passed on when the file asks for NDIF."""
        return notebook_parameters(self.spec)


def notebook_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    """What the runner passes to papermill: `parameters`, plus `remote: true` when asked for."""
    params = dict(spec.get("parameters") or {})
    if spec.get("remote"):
        params["remote"] = True
    return params


def file_parameters(path: Path) -> dict[str, Any]:
    """The notebook parameters a parameter file sets (as the runner passes them), unvalidated."""
    spec = yaml.safe_load(path.read_text())
    return notebook_parameters(spec) if isinstance(spec, dict) else {}


def template_defaults(template: Path) -> dict[str, Any]:
    """Names and default values assigned in a template's `parameters` cell (literals only)."""
    nb = nbformat.read(template, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    defaults: dict[str, Any] = {}
    for cell in cells:
        for node in ast.parse(cell.source).body:
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                names = target.elts if isinstance(target, ast.Tuple) else [target]
                values: list[ast.expr] = (
                    list(node.value.elts)
                    if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                    else [node.value] * len(names)
                )
                for name, value in zip(names, values, strict=True):
                    if isinstance(name, ast.Name):
                        defaults[name.id] = _literal(value)
    return defaults


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None  # an expression: any plain value is accepted


def _fail(path: Path, message: str) -> ParamFileError:
    return ParamFileError(f"{path}: {message}")


def _check_known(path: Path, what: str, key: str, known: Mapping[str, Any]) -> None:
    """Raise for a key nobody reads, with the closest known one ("did you mean")."""
    if key in known:
        return
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise _fail(path, f"unknown {what}; {hint}known: {sorted(known)}")


def check_plain(path: Path, where: str, value: Any) -> None:
    """Raise unless `value` is a finite scalar, a list, or a mapping with identifier keys."""
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(path, f"{where} is {value}; give a finite number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_plain(path, f"{where}[{i}]", item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            check_key(path, where, key)
            check_plain(path, f"{where}.{key}", item)
        return
    raise _fail(
        path,
        f"{where} is a {type(value).__name__} ({value!r}); only numbers, strings, booleans, null, "
        "lists and mappings are allowed: quote it to make it a string",
    )


def check_key(path: Path, where: str, key: Any) -> None:
    """Raise unless `key` is a plain Python identifier (no spaces, newlines or code)."""
    if not isinstance(key, str) or not key.isidentifier() or keyword.iskeyword(key):
        raise _fail(
            path,
            f"key {key!r} in {where} is not a plain name (letters, digits, underscores); "
            "parameter names become Python variables, so rename it",
        )


def _check_type(path: Path, key: str, value: Any, default: Any) -> None:
    if value is None:
        if default is None or key in NULLABLE:
            return
        raise _fail(path, f"parameters.{key} is null; give {KIND.get(type(default), 'a value')}")
    if default is None:
        return
    want: tuple[type, ...] = (int, float) if isinstance(default, float) else (type(default),)
    if isinstance(default, int) and not isinstance(default, bool):
        want = (int,)
    ok = isinstance(value, want) and not (isinstance(value, bool) and bool not in want)
    if not ok:
        raise _fail(
            path,
            f"parameters.{key} is {value!r}; the template expects {KIND.get(type(default), 'a value')} "
            f"like its default {default!r}",
        )
    if isinstance(default, list) and default and value:
        for i, item in enumerate(value):
            _check_type(path, f"{key}[{i}]", item, default[0])


def _check_range(path: Path, key: str, value: Any) -> None:
    base = key.split("[")[0]
    if base not in RANGES or value is None:
        return
    if isinstance(value, list):
        if not value:
            raise _fail(path, f"parameters.{key} is empty; give at least one value")
        for i, item in enumerate(value):
            _check_range(path, f"{key}[{i}]", item)
        return
    low, high, inclusive = RANGES[base]
    if not isinstance(value, int | float) or isinstance(value, bool):
        return  # the type check reports it
    above = value >= low if inclusive else value > low
    if not (above and value <= high):
        bracket = "[" if inclusive else "("
        raise _fail(path, f"parameters.{key} = {value} is outside {bracket}{low}, {high}]")


def _check_choice(path: Path, key: str, value: Any) -> None:
    if key in CHOICES and value not in CHOICES[key]:
        raise _fail(path, f"parameters.{key} = {value!r}; choose one of {list(CHOICES[key])}")


def _inside(path: Path, repo: Path, key: str, raw: Any) -> Path:
    """`raw` resolved against the repository; raises when it points outside."""
    if not isinstance(raw, str) or not raw:
        raise _fail(path, f"{key} must be a path relative to the repository, got {raw!r}")
    # Lexically (no symlinks followed): `..` may not climb out; a symlinked data folder may.
    resolved = Path(os.path.normpath(repo / raw))
    if not resolved.is_relative_to(Path(os.path.normpath(repo))):
        raise _fail(path, f"{key} = {raw!r} resolves to {resolved}, outside the repository")
    return resolved


def _check_model_path(path: Path, key: str, ref: Any, repo: Path) -> None:
    """A local model (organism or folder) must exist; hub ids are checked by helpers.families."""
    if not isinstance(ref, str):
        return
    if ref.startswith(ORGANISM_PREFIX):
        name = ref.removeprefix(ORGANISM_PREFIX)
        folder = repo / "data" / "organisms" / name
        hint = f"run `python -m helpers.organisms.build --only {name}`"
    elif ref.startswith(("/", "./", "../", "~")):
        folder = Path(ref).expanduser()
        folder = folder if folder.is_absolute() else repo / folder
        hint = "give a folder holding config.json and the weights, or a hub id owner/name"
    else:
        return
    if not (folder / "config.json").is_file():
        raise _fail(path, f"parameters.{key} = {ref!r}: no model at {folder} ({hint})")


def check_parameters(path: Path, params: dict[str, Any], template: Path, repo: Path) -> None:
    """Keys the template declares, values of the right type, range and choice; local models."""
    defaults = template_defaults(template)
    pair_page = {"pair", "base", "tuned"} <= set(defaults)
    for key, value in params.items():
        check_key(path, "parameters", key)
        _check_known(path, f"parameter '{key}' for template {template.name}", key, defaults)
        check_plain(path, f"parameters.{key}", value)
        _check_type(path, key, value, defaults[key])
        if not pair_page:
            _check_range(path, key, value)
            _check_choice(path, key, value)
        if key in MODEL_KEYS:
            for i, ref in enumerate(value) if isinstance(value, list) else [(None, value)]:
                _check_model_path(path, key if i is None else f"{key}[{i}]", ref, repo)
    if "pair" in defaults:
        _check_pair(path, params.get("pair"))
    if pair_page:
        from helpers.specs import PairSpec

        problems = PairSpec.errors(params)
        if problems:
            raise _fail(path, "parameters: " + "; ".join(problems))


def _check_pair(path: Path, pair: Any) -> None:
    if pair != path.stem:
        raise _fail(
            path,
            f"parameters.pair is {pair!r} but must equal the file's name '{path.stem}': the pair "
            f"names the results folder data/results/<pair>, so set `pair: {path.stem}` (or rename "
            "the file) and no two files share a folder",
        )


def _check_top_level(path: Path, spec: dict[str, Any]) -> None:
    for key, value in spec.items():
        check_key(path, "the top level", key)
        _check_known(path, f"key '{key}'", key, TOP_LEVEL)
        check_plain(path, key, value)
        want = TOP_LEVEL[key]
        if value is not None and not (
            isinstance(value, want) and not (isinstance(value, bool) and bool not in want)
        ):
            raise _fail(path, f"{key} is {value!r}; it must be {KIND[want[0]]}")
    for key in REQUIRED:
        if key not in spec:
            raise _fail(path, f"missing key '{key}'")


def check_file(path: Path, spec: Any, *, repo: Path, templates_dir: Path) -> CheckedFile:
    """Validate the parsed YAML `spec` of parameter file `path`; raises ParamFileError."""
    if not isinstance(spec, dict):
        raise _fail(path, "expected a mapping with keys notebook, output, parameters")
    _check_top_level(path, spec)
    template = templates_dir / f"{spec['notebook']}.ipynb"
    if not template.is_file():
        known = sorted(p.stem for p in templates_dir.glob("*.ipynb"))
        raise _fail(path, f"unknown notebook '{spec['notebook']}'; templates: {known}")
    output = _inside(path, repo, "output", spec["output"])
    if output.suffix != ".ipynb" or not output.is_relative_to(
        Path(os.path.normpath(repo / "book"))
    ):
        raise _fail(path, f"output must be an .ipynb under book/, got {spec['output']!r}")
    inputs = [_inside(path, repo, f"inputs[{i}]", p) for i, p in enumerate(spec.get("inputs", []))]
    stage = spec.get("stage", 1)
    if not 0 <= stage <= 99:
        raise _fail(path, f"stage = {stage} is outside [0, 99] (9 runs last, after the pairs)")
    check_parameters(path, spec.get("parameters") or {}, template, repo)
    return CheckedFile(path=path, spec=spec, template=template, output=output, inputs=inputs)
