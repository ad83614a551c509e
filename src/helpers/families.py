"""Offline validation of a parameter file: ids, revisions, template, architecture, memory plan.

`validate_params(path)` checks what can be checked without a network: hub ids are well formed,
revisions are pinned to commit SHAs (else a warning "unpinned"), the template, dataset and dtype
exist, remote code is off unless asked for, the `model_config` block names an architecture that
`helpers.architectures` supports, and the planner's memory estimate on common GPUs. The runner's
`--dry-run` prints one report per file; `python -m helpers.families [files]` does the same.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers import planning
from helpers.architectures import ADAPTERS
from helpers.paths import layout

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
PLAN_DEVICES: tuple[str, ...] = ("T4", "L4", "A100-40GB", "A100-80GB")
DEFAULT_PROMPT_TOKENS = 256


@dataclass
class ValidationReport:
    """What a parameter file got right and wrong; `ok` when there are no errors."""

    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    fits: dict[str, str] = field(default_factory=dict)  # device -> "gen b=.., eap b=.." or "no"

    @property
    def ok(self) -> bool:
        return not self.errors

    def __str__(self) -> str:
        head = f"{'ok  ' if self.ok else 'FAIL'} {self.path.name}"
        lines = [head]
        lines += [f"  error: {e}" for e in self.errors]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [f"  {i}" for i in self.info]
        return "\n".join(lines)


def _is_local(ref: str) -> bool:
    return ref.startswith("organism:") or ref.startswith(("/", "./", "../"))  # no disk access


def _check_model(report: ValidationReport, role: str, ref: Any, revision: Any) -> None:
    if not isinstance(ref, str) or not ref:
        report.errors.append(f"parameters.{role} must be a model reference string")
        return
    if _is_local(ref):
        return
    if not HUB_ID.match(ref):
        report.errors.append(
            f"parameters.{role} = {ref!r} is not a hub id '<org>/<name>' (nor organism:/a path)"
        )
        return
    if revision is None:
        report.warnings.append(
            f"{role} {ref} is unpinned (revision: null): a re-run may analyse other weights; "
            "pin the commit SHA from huggingface_hub.model_info(id).sha"
        )
    elif not isinstance(revision, str) or not COMMIT_SHA.match(revision):
        report.warnings.append(
            f"{role} {ref} revision {revision!r} is a branch or ref, not a 40-hex commit SHA: "
            "it can move; pin the commit"
        )


def _check_choices(report: ValidationReport, params: dict[str, Any], pair: bool) -> None:
    """Check the keys a file sets (absent keys take the notebook's defaults).

    A pair file's parameters must form a valid `PairSpec` (the notebook builds one from them);
    other notebooks' files are checked for the options they share with it.
    """
    from helpers.specs import PairSpec

    if pair:
        report.errors.extend(PairSpec.errors(params))
    else:
        keys = ("template", "dtype", "alphas", "max_new_tokens")
        shared: dict[str, Any] = {k: params[k] for k in keys if k in params}
        report.errors.extend(PairSpec.errors(shared))
    if params.get("trust_remote_code"):
        report.warnings.append(
            "trust_remote_code is on: the hub repository's own Python code will run; say so on "
            "the page and pin the revision"
        )


def _plan(report: ValidationReport, spec: dict[str, Any], params: dict[str, Any]) -> None:
    shape = planning.ModelShape.from_config(spec["model_config"])
    if shape.model_type not in ADAPTERS:
        report.errors.append(
            f"architecture {shape.model_type!r} has no EAP adapter (supported: "
            f"{', '.join(sorted(ADAPTERS))})"
        )
        return
    declared = spec["model_config"].get("n_params")
    counted = shape.n_params()
    if declared and abs(counted - declared) > 0.01 * declared:
        report.errors.append(
            f"model_config gives {counted / 1e9:.3f}B parameters but n_params says "
            f"{declared / 1e9:.3f}B: a size field is wrong"
        )
    budget = spec.get("planning") or {}
    prompt = int(budget.get("prompt_tokens", DEFAULT_PROMPT_TOKENS))
    max_new = int(params.get("max_new_tokens") or 1024)
    answer = int(budget.get("answer_tokens", max_new))
    alpha = max(params.get("alphas") or [1.0])
    t_cut = max(1, int(alpha * answer))
    dtype = params.get("dtype", "bfloat16")
    report.info.append(
        f"architecture {shape.model_type}: {shape.n_layers} layers, {counted / 1e9:.2f}B "
        f"parameters; EAP sequence {prompt} + T_cut {t_cut} (alpha {alpha} x answer {answer})"
    )
    for device in PLAN_DEVICES:
        try:
            p = planning.plan(
                shape,
                device=device,
                eap_seq_len=prompt + t_cut,
                eap_labelled=t_cut,
                prompt_len=prompt,
                max_new_tokens=max_new,
                dtype=dtype,
            )
        except planning.DoesNotFit as err:
            first = str(err).splitlines()[0]
            report.fits[device] = "no"
            report.info.append(f"{device}: does not fit ({first.split(': ', 1)[-1]})")
            continue
        report.fits[device] = f"gen {p.generation_batch}, EAP {p.eap_batch}"
        report.info.append(
            f"{device}: generation batch {p.generation_batch} "
            f"({p.generation.total / planning.GiB:.1f} GiB), edge_scores batch {p.eap_batch} "
            f"({p.eap.total / planning.GiB:.1f} GiB)"
        )


def validate_params(path: str | Path) -> ValidationReport:
    """Check one parameter file offline; never raises for a bad file (errors go in the report)."""
    path = Path(path)
    report = ValidationReport(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        report.errors.append(f"cannot read YAML: {err}")
        return report
    if not isinstance(spec, dict):
        report.errors.append("expected a mapping with notebook, output, parameters")
        return report
    for key in ("notebook", "output", "parameters"):
        if key not in spec:
            report.errors.append(f"missing key {key!r}")
    if not (layout().notebooks / f"{spec.get('notebook')}.ipynb").is_file():
        report.errors.append(f"notebook template {spec.get('notebook')!r} not in notebooks/")
    output = str(spec.get("output", ""))
    if not (output.startswith("book/") and output.endswith(".ipynb")):
        report.errors.append(f"output must be an .ipynb under book/, got {output!r}")
    params = spec.get("parameters") or {}
    if not isinstance(params, dict):
        report.errors.append("parameters must be a mapping")
        return report
    pair = spec.get("notebook") == "pair_analysis" or "base" in params or "tuned" in params
    for role in ("base", "tuned") if pair else ():
        _check_model(report, role, params.get(role), params.get(f"{role}_revision"))
    _check_choices(report, {**params, **_remote(spec)}, pair)
    hub = pair and any(not _is_local(str(params.get(r, ""))) for r in ("base", "tuned"))
    if hub and not spec.get("requires_gpu"):
        report.warnings.append("hub 7B models need a GPU: set requires_gpu: true")
    if "model_config" in spec:
        try:
            _plan(report, spec, params)
        except ValueError as err:
            report.errors.append(f"model_config: {err}")
    elif hub:
        report.warnings.append("no model_config block: architecture and memory not checked")
    return report


def _remote(spec: dict[str, Any]) -> dict[str, Any]:
    """A file's top-level `remote:` as the pair parameter the runner passes."""
    return {"remote": bool(spec["remote"])} if "remote" in spec else {}


def validate_all(paths: list[Path] | None = None) -> list[ValidationReport]:
    """Reports for `paths` (default: every notebooks/params/*.yml)."""
    return [validate_params(p) for p in (paths or sorted(layout().params.glob("*.yml")))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.families", description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="parameter files (default: all)")
    args = parser.parse_args(argv)
    reports = validate_all(args.paths or None)
    for report in reports:
        print(report)
    bad = sum(not r.ok for r in reports)
    print(f"{len(reports) - bad} of {len(reports)} parameter files valid", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
