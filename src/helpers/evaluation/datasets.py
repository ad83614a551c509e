"""Test sets as lists of `Item(id, question, answer)`, and the registry of evaluation tasks.

The study's hub sets (GSM8K, MATH, MATH-500, College Math) are registered here; other packages
register theirs with `register_task` (the organisms do, in `helpers.organisms.task`), so this
package knows no task but the generic ones.

Real datasets load from the Hugging Face hub with `datasets.load_dataset` (needs a network) or from a
local JSONL file holding either the hub's raw rows or already converted `{id, question, answer}` rows.
Hub copies chosen (the original `hendrycks/competition_math` was taken down):
- GSM8K: `openai/gsm8k`, config `main`, split `test` (1,319); gold = text after the last "####".
- MATH: `EleutherAI/hendrycks_math`, the seven subject configs' `test` splits concatenated (5,000);
  gold = content of the last \\boxed{} of the solution.
- MATH-500: `HuggingFaceH4/MATH-500`, split `test` (500); gold = its `answer` field.
- College Math (MathScale's test set, 2,818): `di-zhang-fdu/College_Math_Test`, split `test`;
  gold = its `answer` field with surrounding `$` removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import plugins


@dataclass(frozen=True)
class Item:
    """One test question: a stable id, the question text and the gold answer as a string."""

    id: str
    question: str
    answer: str


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced; None if absent.

    Also accepts the brace-less form `\\boxed 5` (content up to the next space or `$`).
    """
    best = None
    for marker in ("\\boxed", "\\fbox"):
        pos = text.rfind(marker)
        if pos >= 0 and (best is None or pos > best[0]):
            best = (pos, marker)
    if best is None:
        return None
    i = best[0] + len(best[1])
    if text.startswith(" ", i) and not text.startswith(" {", i):
        end = i + 1
        while end < len(text) and text[end] not in " $\n":
            end += 1
        return text[i + 1 : end] or None
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def gsm8k_gold(solution: str) -> str:
    """GSM8K gold answer: the text after the last `####`, stripped, thousands separators removed."""
    if "####" not in solution:
        raise ValueError(f"GSM8K solution has no '####' answer line: {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def math_gold(solution: str) -> str:
    """MATH gold answer: the content of the solution's last `\\boxed{}`."""
    boxed = last_boxed(solution)
    if boxed is None:
        raise ValueError(f"MATH solution has no \\boxed{{}} answer: {solution[-80:]!r}")
    return boxed.strip()


def _strip_dollars(answer: str) -> str:
    answer = answer.strip()
    while len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer[1:-1].strip()
    return answer


def _gsm8k_row(row: Mapping[str, Any], index: int) -> Item:
    return Item(f"gsm8k/{index:04d}", row["question"], gsm8k_gold(row["answer"]))


def _math_row(row: Mapping[str, Any], index: int) -> Item:
    subject = str(row.get("type", "math")).lower().replace(" & ", "_and_").replace(" ", "_")
    return Item(f"math/{subject}/{index:04d}", row["problem"], math_gold(row["solution"]))


def _math500_row(row: Mapping[str, Any], index: int) -> Item:
    item_id = row.get("unique_id") or f"math500/{index:03d}"
    return Item(str(item_id), row["problem"], str(row["answer"]).strip())


def _college_row(row: Mapping[str, Any], index: int) -> Item:
    question = row.get("question", row.get("problem"))
    if question is None:
        raise ValueError(f"College Math row has neither 'question' nor 'problem': {sorted(row)}")
    return Item(f"college_math/{index:04d}", question, _strip_dollars(str(row["answer"])))


@dataclass(frozen=True)
class DatasetSpec:
    """Where a test set lives on the hub and how one raw row becomes an `Item`."""

    name: str
    hub_id: str
    configs: tuple[str | None, ...]
    split: str
    convert: Callable[[Mapping[str, Any], int], Item]
    size: int


MATH_SUBJECTS: tuple[str, ...] = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)

DATASETS: dict[str, DatasetSpec] = {
    "gsm8k": DatasetSpec("gsm8k", "openai/gsm8k", ("main",), "test", _gsm8k_row, 1319),
    "math": DatasetSpec(
        "math", "EleutherAI/hendrycks_math", MATH_SUBJECTS, "test", _math_row, 5000
    ),
    "math500": DatasetSpec("math500", "HuggingFaceH4/MATH-500", (None,), "test", _math500_row, 500),
    "college_math": DatasetSpec(
        "college_math", "di-zhang-fdu/College_Math_Test", (None,), "test", _college_row, 2818
    ),
}


def _convert_rows(spec: DatasetSpec, rows: Iterable[Mapping[str, Any]]) -> list[Item]:
    items = []
    for index, row in enumerate(rows):
        if {"id", "question", "answer"} <= set(row) and "solution" not in row:
            items.append(Item(str(row["id"]), str(row["question"]), str(row["answer"])))
        else:
            items.append(spec.convert(row, index))
    return items


def _load_hub(spec: DatasetSpec) -> list[Item]:
    """Download (or read from the local HF cache) every config's split and convert it."""
    from datasets import load_dataset

    rows: list[Mapping[str, Any]] = []
    for config in spec.configs:
        rows.extend(load_dataset(spec.hub_id, config, split=spec.split))
    return _convert_rows(spec, rows)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


ItemLoader = Callable[[Path | None, int | None, int], list[Item]]  # (path, n, seed) -> items


@dataclass(frozen=True)
class Task:
    """What a model is evaluated on: its items, the prompt template and the grader.

    `template` None means the model family picks it (the study's hub test sets are asked in each
    family's own format); a task with a format of its own (the organisms') names it.
    """

    name: str
    load: ItemLoader
    grader: str
    template: str | None = None
    description: str = ""


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add (or replace) a task; `load_items(task.name)` and `grader_for` then know it."""
    TASKS[task.name] = task
    return task


def task_names() -> tuple[str, ...]:
    """Names of every registered task, in registration order."""
    plugins.load()
    return tuple(TASKS)


def get_task(name: str) -> Task:
    """The registered task `name`; the error lists the known ones."""
    if name not in TASKS:
        plugins.load()
    if name not in TASKS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def _hub_loader(spec: DatasetSpec) -> ItemLoader:
    def load(path: Path | None, n: int | None, seed: int) -> list[Item]:
        items = _convert_rows(spec, read_jsonl(path)) if path is not None else _load_hub(spec)
        return items if n is None else items[:n]

    return load


for _spec in DATASETS.values():
    register_task(Task(_spec.name, _hub_loader(_spec), "math_verify", None, _spec.hub_id))


def load_items(
    name: str,
    *,
    path: str | Path | None = None,
    n: int | None = None,
    seed: int = 0,
) -> list[Item]:
    """Items of task `name` (see `task_names()`), from `path` (JSONL) if given, else its source.

    `n` keeps the first n items (a generated task, such as the organisms', generates n items
    with `seed`). Ids are unique; a duplicate raises.
    """
    items = get_task(name).load(None if path is None else Path(path), n, seed)
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"dataset {name!r} has duplicate ids; give each row a unique 'id'")
    return items
