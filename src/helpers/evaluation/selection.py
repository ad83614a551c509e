"""The study's question selection and truncation (method.md section 5), and the EAP batches.

Authors' procedure, reproduced by default:
1. keep questions both models answered correctly, 2. and whose prompts have equal token length;
3. refer = min(mean answer length of model A, of model B) over those questions (the code's rule;
   `reference="paper"` gives the paper's mean over questions of (T_A + T_B) / 2);
4. keep beta*refer <= (T_A + T_B)/2 <= gamma*refer and |T_A - T_B| / ((T_A + T_B)/2) <= delta;
5. sample N: `random.Random(seed).sample(sorted(ids), N)` (all, sorted, when N or fewer remain);
6. T_cut = max(1, int(alpha * refer)).
Answer lengths count answer tokens without the EOS. An answer shorter than T_cut cannot give T_cut
labelled tokens of its own; by default such questions are dropped before sampling (counted as the
`long_enough` filter; the window filter makes this rare, possible only for alpha above ~0.37);
`short_answers="keep"` keeps them with fewer labels, as slicing in the authors' code would.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd
import torch

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "prompt_ids", "answer_ids", "correct")


class NoQuestionsSelected(ValueError):
    """Raised when no question survives the filters; the message lists every filter's count."""


@dataclass(frozen=True)
class SelectionSpec:
    """The selection's hyper-parameters: the one home of their defaults (the authors' values).

    `n` questions are sampled with `seed` from those whose mean answer length lies in
    [beta, gamma] * refer and whose two lengths differ by at most `delta` of their mean.
    """

    n: int = 100
    beta: float = 0.5
    gamma: float = 1.5
    delta: float = 0.5
    seed: int = 42
    reference: Literal["code", "paper"] = "code"
    short_answers: Literal["drop", "keep"] = "drop"

    def __post_init__(self) -> None:
        if self.reference not in ("code", "paper"):
            raise ValueError(f"reference must be 'code' or 'paper', got {self.reference!r}")
        if self.short_answers not in ("drop", "keep"):
            raise ValueError(f"short_answers must be 'drop' or 'keep', got {self.short_answers!r}")
        if not (0 <= self.beta <= self.gamma and self.delta >= 0 and self.n >= 1):
            raise ValueError("need 0 <= beta <= gamma, delta >= 0 and n >= 1")

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of `select_questions`."""
        return asdict(self)


_DEFAULT = SelectionSpec()


@dataclass
class ModelBatch:
    """Right-padded EAP inputs: prompt + own answer[:T_cut]; labels only on those answer tokens."""

    input_ids: torch.Tensor  # long [n, width]
    attention_mask: torch.Tensor  # long [n, width]
    labels: torch.Tensor  # long [n, width], -100 on prompt and padding


@dataclass
class Selection:
    """Chosen question ids (in batch row order), reference length, T_cut, filter counts, batches."""

    ids: list[str]
    refer: float
    t_cut: int
    counts: dict[str, int]
    batches: dict[str, ModelBatch]
    lengths: pd.DataFrame = field(repr=False)  # per surviving question: T of each model, mean


def truncation_batch(
    prompts: list[list[int]], answers: list[list[int]], t_cut: int, pad_id: int
) -> ModelBatch:
    """Batch of prompt + answer[:t_cut], right-padded, labels = answer[:t_cut] on answer positions.

    Transformers' loss shifts labels inside, so the last input token answer[t_cut-1] is read but not
    scored and the scored targets are answer[0:t_cut]: exactly method.md's input = prompt +
    answer[0:t_cut-1], targets = answer[0:t_cut]. Right padding keeps every real token's position.
    """
    if t_cut < 1:
        raise ValueError(f"t_cut must be >= 1, got {t_cut}")
    if any(len(a) == 0 for a in answers):
        raise ValueError("an answer is empty: nothing to label; drop it before truncation")
    rows = [p + a[:t_cut] for p, a in zip(prompts, answers, strict=True)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (prompt, row) in enumerate(zip(prompts, rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, : len(row)] = 1
        labels[i, len(prompt) : len(row)] = torch.tensor(row[len(prompt) :], dtype=torch.long)
    return ModelBatch(input_ids, attention_mask, labels)


def _check(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"records of {name!r} lack columns {missing}; pass evaluate_model's output "
            f"(needs {', '.join(REQUIRED_COLUMNS)})"
        )
    if frame["id"].duplicated().any():
        raise ValueError(f"records of {name!r} have duplicate ids")
    return frame.set_index("id")


def _paired_lengths(a: pd.DataFrame, b: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """Answer lengths (t_a, t_b, mean) of the questions both answered correctly with prompts of
    equal length (filters 1-2), counting survivors of each filter into `counts`."""
    common = sorted(set(a.index) & set(b.index))
    counts["common"] = len(common)
    ids = [i for i in common if bool(a.at[i, "correct"]) and bool(b.at[i, "correct"])]
    counts["both_correct"] = len(ids)
    ids = [i for i in ids if len(a.at[i, "prompt_ids"]) == len(b.at[i, "prompt_ids"])]
    counts["equal_prompt_length"] = len(ids)
    lengths = pd.DataFrame(
        {
            "t_a": [len(a.at[i, "answer_ids"]) for i in ids],
            "t_b": [len(b.at[i, "answer_ids"]) for i in ids],
        },
        index=pd.Index(ids, name="id"),
        dtype=float,
    )
    lengths["mean"] = (lengths["t_a"] + lengths["t_b"]) / 2
    return lengths


def select_questions(
    base: pd.DataFrame,
    tuned: pd.DataFrame,
    *,
    n: int = _DEFAULT.n,
    alpha: float = 0.1,
    beta: float = _DEFAULT.beta,
    gamma: float = _DEFAULT.gamma,
    delta: float = _DEFAULT.delta,
    seed: int = _DEFAULT.seed,
    reference: str = _DEFAULT.reference,
    short_answers: str = _DEFAULT.short_answers,
    pad_id: int = 0,
    names: tuple[str, str] = ("base", "tuned"),
) -> Selection:
    """Select questions and T_cut from two models' graded records, and build their EAP batches.

    `base` / `tuned` are DataFrames with id, prompt_ids, answer_ids, correct (one row per id).
    Defaults come from `SelectionSpec`; `select_questions(a, b, alpha=..., **spec.kwargs())`
    applies a spec. Warns when fewer than `n` survive; raises `NoQuestionsSelected` when none do.
    """
    if reference not in ("code", "paper"):
        raise ValueError(f"reference must be 'code' or 'paper', got {reference!r}")
    if short_answers not in ("drop", "keep"):
        raise ValueError(f"short_answers must be 'drop' or 'keep', got {short_answers!r}")
    if not (alpha > 0 and 0 <= beta <= gamma and delta >= 0 and n >= 1):
        raise ValueError("need alpha > 0, 0 <= beta <= gamma, delta >= 0 and n >= 1")
    a, b = _check(base, names[0]), _check(tuned, names[1])
    counts: dict[str, int] = {}
    lengths = _paired_lengths(a, b, counts)
    ids = list(lengths.index)
    if ids:
        refer = (
            min(lengths["t_a"].mean(), lengths["t_b"].mean())
            if reference == "code"
            else lengths["mean"].mean()
        )
    else:
        refer = float("nan")
    m = lengths["mean"]
    window = (m >= beta * refer) & (m <= gamma * refer)
    counts["window"] = int(window.sum())
    balance = (lengths["t_a"] - lengths["t_b"]).abs() <= delta * m
    keep = window & balance
    counts["balance"] = int(keep.sum())
    t_cut = max(1, int(alpha * refer)) if ids else 0
    if short_answers == "drop":
        keep &= (lengths["t_a"] >= t_cut) & (lengths["t_b"] >= t_cut)
    counts["long_enough"] = int(keep.sum())
    pool = sorted(lengths.index[keep])
    if not pool:
        raise NoQuestionsSelected(
            "no question survives the selection; counts per filter: "
            + ", ".join(f"{k}={v}" for k, v in counts.items())
            + f" (refer={refer:.1f}). Loosen beta/gamma/delta, raise max_new_tokens or "
            "evaluate more questions."
        )
    if len(pool) > n:
        chosen = random.Random(seed).sample(pool, n)
    else:
        chosen = pool
        if len(pool) < n:
            warnings.warn(
                f"only {len(pool)} questions survive the selection (asked for {n}); proceeding "
                f"with them. Counts: {counts}",
                stacklevel=2,
            )
    counts["selected"] = len(chosen)
    batches = {
        name: truncation_batch(
            [list(frame.at[i, "prompt_ids"]) for i in chosen],
            [list(frame.at[i, "answer_ids"]) for i in chosen],
            t_cut,
            pad_id,
        )
        for name, frame in zip(names, (a, b), strict=True)
    }
    return Selection(chosen, float(refer), t_cut, counts, batches, lengths.loc[chosen])
