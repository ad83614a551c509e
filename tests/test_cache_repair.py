"""Silent wrong numbers and stuck caches (issue 13, cases 12-15).

12: `compare` refuses a histogram range that holds no data, as the metric does. 13: NaN weights
raise in `edge_scores`, naming the samples, and nothing is cached. 14: a truncated generation
Parquet, grades Parquet or scores `.pt` is named, moved aside and recomputed. 15: grading has one
budget per answer that does not depend on what ran before; a timed-out grade says so and is
retried on the next run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import analysis, stats
from helpers.cache_repair import CorruptCacheWarning
from helpers.eap import EdgeScores, NonFiniteScores, edge_scores
from helpers.evaluation import grading, runner
from helpers.evaluation.datasets import load_items
from helpers.evaluation.runner import GenerationSettings, evaluate_model
from helpers.evaluation.selection import ModelBatch
from helpers.metrics import MetricInputError
from helpers.organisms.tokenizer import build_tokenizer
from helpers.tiny_models import tiny_model


def tiny_batch(vocab: int, n: int, seq: int) -> ModelBatch:
    """`n` full-length random sequences, the second half of each labelled."""
    ids = torch.randint(3, vocab, (n, seq), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, : seq // 2] = -100
    return ModelBatch(ids, torch.ones_like(ids), labels)


def _scores(seed: int, n: int = 6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(n, 5, 5)) * np.tril(np.ones((5, 5)), -1).T


def test_case12_compare_refuses_an_empty_histogram_range() -> None:
    mask = np.triu(np.ones((5, 5), bool), 1)
    base, tuned = _scores(0), _scores(1)
    with pytest.raises(MetricInputError, match=r"no \|W\| value of base falls inside"):
        stats.compare(base, tuned, mask=mask, n_boot=20, hist_range=(100.0, 200.0))
    table = stats.compare(base, tuned, mask=mask, n_boot=20, hist_range=(0.0, 1.0))
    assert table.set_index("metric").loc["information_complexity", "base"] > 0


@pytest.fixture(scope="module")
def tiny():
    tok = build_tokenizer()
    return tiny_model("llama", vocab_size=len(tok), seed=3), tok


def test_case13_nan_weights_raise_naming_samples_and_nothing_is_cached(tiny, tmp_path) -> None:
    model, _ = tiny
    batch = tiny_batch(vocab=model.config.vocab_size, n=3, seq=7)
    broken = tiny_model("llama", vocab_size=model.config.vocab_size, seed=3)
    with torch.no_grad():
        broken.get_input_embeddings().weight[batch.input_ids[1, 0]] = float("nan")
    with pytest.raises(NonFiniteScores, match=r"samples \[1\] of this batch") as err:
        edge_scores(broken, batch.input_ids, batch.attention_mask, batch.labels)
    assert err.value.samples == [1]
    with pytest.raises(NonFiniteScores):
        analysis.score_batch(broken, batch, chunk=3, cache_dir=tmp_path)
    assert list(tmp_path.glob("*.pt")) == []


def test_case14_truncated_scores_file_is_moved_aside_and_recomputed(tiny, tmp_path) -> None:
    model, _ = tiny
    batch = tiny_batch(vocab=model.config.vocab_size, n=3, seq=7)
    first = analysis.score_batch(model, batch, chunk=3, cache_dir=tmp_path)
    [path] = tmp_path.glob("*.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(CorruptCacheWarning, match=rf"cache file {path} is unreadable"):
        again = analysis.score_batch(model, batch, chunk=3, cache_dir=tmp_path)
    torch.testing.assert_close(again.scores, first.scores)
    assert len(list(tmp_path.glob("*.pt.corrupt-*"))) == 1
    EdgeScores.load(path)  # recomputed and cached again, readable


def test_case14_nan_in_a_cached_scores_file_is_not_trusted(tiny, tmp_path) -> None:
    model, _ = tiny
    batch = tiny_batch(vocab=model.config.vocab_size, n=3, seq=7)
    first = analysis.score_batch(model, batch, chunk=3, cache_dir=tmp_path)
    [path] = tmp_path.glob("*.pt")
    poisoned = EdgeScores.load(path)
    poisoned.scores[0, 1, 2] = float("nan")
    torch.save(poisoned.__dict__, path)
    with pytest.warns(CorruptCacheWarning, match="NonFiniteScores"):
        again = analysis.score_batch(model, batch, chunk=3, cache_dir=tmp_path)
    torch.testing.assert_close(again.scores, first.scores)


def test_case14_truncated_generation_and_grade_files_are_recomputed(tiny, tmp_path) -> None:
    model, tok = tiny
    items = load_items("organisms", n=6, seed=0)

    def evaluate() -> pd.DataFrame:
        return evaluate_model(
            model,
            tok,
            items,
            dataset="organisms",
            template="organism",
            settings=GenerationSettings(max_new_tokens=5, batch_size=3),
            cache_dir=tmp_path,
            progress=False,
        )

    first = evaluate()
    gens, grades = Path(first.attrs["cache_path"]), Path(first.attrs["grades_path"])
    for path in (gens, grades):
        path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(CorruptCacheWarning) as caught:
        again = evaluate()
    named = " ".join(str(w.message) for w in caught)
    assert str(gens) in named and str(grades) in named
    assert again.attrs["n_generated"] == len(items)
    pd.testing.assert_frame_equal(
        again[["id", "answer_ids", "correct"]], first[["id", "answer_ids", "correct"]]
    )
    assert len(list(tmp_path.glob("*.corrupt-*"))) == 2


def _slow(seconds: float, value):
    def run(*args, **kwargs):
        time.sleep(seconds)
        return value

    return run


def test_case15_one_budget_per_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing and comparing share one budget: an answer cannot take twice the timeout."""
    import math_verify

    grading.grade_math("\\boxed{1}", "1")  # the one-off warm-up (imports) is not timed
    monkeypatch.setattr(grading, "_parse_prediction", _slow(0.6, ["1", "1"]))
    monkeypatch.setattr(grading, "_parse_gold", _slow(0.6, ["1", "1"]))
    monkeypatch.setattr(math_verify, "verify", _slow(0.6, True))
    start = time.perf_counter()
    grade = grading.grade_math("\\boxed{1}", "1", timeout_s=1.0)
    elapsed = time.perf_counter() - start
    assert grade == grading.Grade(False, "", timed_out=True)
    assert elapsed < 1.4
    assert grading.grade_math("\\boxed{1}", "1", timeout_s=3.0) == grading.Grade(True, "1")


def test_case15_grades_do_not_depend_on_what_ran_before() -> None:
    """The same answer gets the same grade cold or right after itself (caches are cleared)."""
    answer, gold = "\\boxed{\\frac{x^{2}-1}{x-1}}", "x+1"
    cold = grading.grade_math(answer, gold, timeout_s=5)
    warm = [grading.grade_math(answer, gold, timeout_s=5) for _ in range(2)]
    assert warm == [cold, cold] and cold.correct and not cold.timed_out
    from math_verify.parser import parse_latex_cached

    grading.grade_math("\\boxed{2}", "2")
    assert parse_latex_cached.cache_info().currsize <= 2  # only this answer's own parses


def test_case15_timed_out_grades_are_retried_on_the_next_run(tmp_path, monkeypatch) -> None:
    records = pd.DataFrame(
        {"id": ["a", "b"], "text": ["\\boxed{1}", "\\boxed{2}"], "gold": ["1", "2"]}
    )
    calls: list[list[str]] = []
    timed_out = {"a"}

    def fake(texts, golds, **kwargs):
        calls.append(list(texts))
        return [
            grading.Grade(False, "", timed_out=True)
            if t == "\\boxed{1}" and "a" in timed_out
            else grading.Grade(True, t[-2])
            for t in texts
        ]

    monkeypatch.setattr(runner, "grade_answers", fake)
    path = tmp_path / "grades.parquet"
    first = runner.grade_cached(records, "math_verify", path, progress=False)
    assert [g.timed_out for g in first] == [True, False]
    timed_out.clear()
    second = runner.grade_cached(records, "math_verify", path, progress=False)
    assert calls == [["\\boxed{1}", "\\boxed{2}"], ["\\boxed{1}"]]  # only the timed-out one again
    assert [g.correct for g in second] == [True, True]
