"""The organisms' registrations with the generic layers: their task (test split, prompt format,
grader) with `helpers.evaluation`, and the `organism:` model references with `helpers.backend`.

`helpers.plugins` imports this module the first time a registry lacks a name, so
`load_items("organisms")`, `template="organism"` and `load_model("organism:grpo")` work anywhere,
while `helpers.evaluation` and `helpers.backend` import nothing from here.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any

import torch

from helpers.backend import register_source
from helpers.evaluation.datasets import Item, Task, register_task
from helpers.evaluation.grading import Grade, Grader, register_grader
from helpers.evaluation.prompts import Template, register_template
from helpers.organisms import grading as organism_grading
from helpers.organisms.tasks import make_problems, prompt_of

TASK = "organisms"
TEMPLATE = "organism"
DEFAULT_N = 500


def load_test_items(path: Path | None, n: int | None, seed: int) -> list[Item]:
    """The generated test split: `n` problems (default 500) of `seed`."""
    if path is not None:
        raise ValueError("the organisms' test split is generated, not read: drop `path`")
    problems = make_problems("test", DEFAULT_N if n is None else n, seed)
    return [Item(p.id, p.question, str(p.answer)) for p in problems]


def grade_organism(completion: str, gold: str) -> Grade:
    """The organisms' grader: integer answer extracted by format, compared exactly."""
    value = organism_grading.extract_answer(completion)
    correct = organism_grading.grade(completion, int(gold))
    return Grade(bool(correct), "" if value is None else str(value))


def grader_version() -> str:
    """A hash of the grading module's source: a changed grader invalidates cached grades."""
    source = inspect.getsource(organism_grading).encode()
    return "organisms-" + hashlib.sha256(source).hexdigest()[:12]


def load_organism_ref(name: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """(model, tokenizer) of `organism:<name>` (a committed name, or a path under data/organisms)."""
    from helpers.organisms.registry import ORGANISMS_DIR, load_organism

    target = name if "/" not in name else ORGANISMS_DIR / name
    return load_organism(target, dtype=dtype)


def register() -> None:
    """Register the organisms' task, template, grader and model references (idempotent)."""
    register_template(
        Template(TEMPLATE, None, False, "organisms' own prompt (question + blank line)", prompt_of)
    )
    register_grader(Grader("organisms", grade_organism, grader_version))
    register_task(Task(TASK, load_test_items, "organisms", TEMPLATE, "generated test split"))
    register_source("organism:", load_organism_ref)


register()
