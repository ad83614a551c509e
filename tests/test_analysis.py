"""The pair analysis runs end to end on tiny models, caches its scores, and saves its tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import analysis
from helpers.organisms.tokenizer import build_tokenizer
from helpers.specs import PairSpec
from helpers.tiny_models import tiny_model


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    tok = build_tokenizer()
    base = (tiny_model("llama", vocab_size=len(tok), seed=1), tok)
    tuned = (tiny_model("llama", vocab_size=len(tok), seed=2), tok)
    cache = tmp_path_factory.mktemp("gens")
    records = analysis.evaluate_pair(
        base,
        tuned,
        task="organisms",
        max_new_tokens=6,
        n_items=10,
        batch_size=5,
        names=("tiny-1", "tiny-2"),
        cache_dir=cache,
    )
    return base, tuned, records


def test_evaluate_pair_summary(pair) -> None:
    _, _, records = pair
    summary = records.summary()
    assert list(summary.index) == ["base", "tuned"]
    assert (summary["questions"] == 10).all()
    assert ((summary["mean answer tokens"] > 0) & (summary["mean answer tokens"] <= 6)).all()


def test_score_pair_caches_and_saves(pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, tuned, records = pair
    # random models solve nothing: mark every answer correct so the selection has questions
    for frame in (records.base, records.tuned):
        frame["correct"] = True
    monkeypatch.setenv("RL_CIRCUITRY_ROOT", str(tmp_path))  # the layout's scores: tmp/data/scores
    calls = []
    real = analysis.edge_scores
    monkeypatch.setattr(analysis, "edge_scores", lambda *a, **k: calls.append(1) or real(*a, **k))

    spec = PairSpec.from_params(
        {
            "pair": "tiny",
            "base": "tiny-1",
            "tuned": "tiny-2",
            "alphas": [0.5, 1.0],
            "n_questions": 6,
            "eap_chunk": 4,
            "n_boot": 50,
            "delta": 10.0,
            "beta": 0.0,
            "gamma": 10.0,
            "controls": ["raw"],
            "token_profile": 0,
        }
    )

    def run() -> analysis.PairAnalysis:
        return analysis.score_pair(spec, base, tuned, records)

    result = run()
    first_calls = len(calls)
    assert first_calls == 8  # two alphas x two models x two chunks of at most 4 questions
    assert len(list((tmp_path / "data" / "scores").glob("*.pt"))) == 4
    again = run()
    assert len(calls) == first_calls  # every score came from the cache
    torch.testing.assert_close(again.alphas[0.5].tuned.scores, result.alphas[0.5].tuned.scores)
    table = result.metric_table()
    assert set(table["alpha"]) == {0.5, 1.0}
    assert set(table["metric"]) >= {"intensity", "kurtosis", "diversity"}
    res = result.alphas[1.0]
    n = len(res.selection.ids)
    assert res.base.scores.shape[0] == n == res.tuned.scores.shape[0]
    assert torch.isfinite(res.base.scores).all()

    folder = analysis.save_results(result, {"alphas": [0.5, 1.0]}, root=tmp_path / "results")
    saved = pd.read_csv(folder / "metrics.csv")
    assert len(saved) == len(table)
    loaded = analysis.load_results(tmp_path / "results", check=False)
    assert list(loaded["pair"].unique()) == ["tiny"]


def test_score_pair_scores_every_control_and_pools_seeds(
    pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All controls, two tuned seeds: one row per (alpha, control, metric), seeds pooled, every
    EAP call cached; the token profile covers each model's answer tokens at the focus alpha."""
    base, tuned, records = pair
    tok = base[1]
    seed = (tiny_model("llama", vocab_size=len(tok), seed=3), tok)
    seed_records = analysis.evaluate_pair(
        base,
        seed,
        task="organisms",
        max_new_tokens=6,
        n_items=10,
        batch_size=5,
        names=("tiny-1", "tiny-3"),
        cache_dir=tmp_path / "gens",
    )
    for frame in (records.base, records.tuned, seed_records.base, seed_records.tuned):
        frame["correct"] = True
    monkeypatch.setenv("RL_CIRCUITRY_ROOT", str(tmp_path))
    spec = PairSpec.from_params(
        {
            "pair": "tiny",
            "base": "tiny-1",
            "tuned": "tiny-2",
            "tuned_seeds": ["tiny-3"],
            "alphas": [0.2, 1.0],
            "focus_alpha": 1.0,
            "n_questions": 6,
            "eap_chunk": 8,
            "n_boot": 50,
            "delta": 10.0,
            "beta": 0.0,
            "gamma": 10.0,
        }
    )
    calls = []
    real = analysis.edge_scores
    monkeypatch.setattr(analysis, "edge_scores", lambda *a, **k: calls.append(1) or real(*a, **k))
    result = analysis.score_pair(spec, base, tuned, records, [(seed, seed_records)])
    table = result.metric_table()
    from helpers.controls import CONTROLS
    from helpers.stats import METRICS

    assert len(table) == 2 * len(CONTROLS) * len(METRICS)
    assert set(table["control"]) == set(CONTROLS)
    tested = table[table["p_boot"].notna()]
    assert (tested["n_seeds"] == 2).all()
    assert (table["t_cuts"].str.count(",") == 1).all()  # one T_cut per seed
    # T_cut 1 at alpha 0.2 (answers of at most 6 tokens): nothing left once the first is dropped.
    low = table[(table["alpha"] == 0.2) & (table["control"] == "no_first_token")]
    assert (result.alphas[0.2].t_cuts == [1, 1]) == low["p_boot"].isna().all()
    raw = result.alphas[1.0].table
    assert list(raw["metric"]) == [m.name for m in METRICS] and "control" not in raw
    tokens = result.alphas[1.0].tokens
    assert tokens is not None and set(tokens.index.get_level_values("model")) == {"base", "tuned"}
    shares = tokens.groupby(level="model")["mass_share"].sum()  # every answer has T_cut tokens
    np.testing.assert_allclose(shares, 1.0, rtol=1e-6)
    n_calls = len(calls)
    again = analysis.score_pair(spec, base, tuned, records, [(seed, seed_records)])
    assert len(calls) == n_calls  # every control's scores came from the cache
    pd.testing.assert_frame_equal(again.metric_table(), table)


def test_auto_batches_follow_the_planner_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers.planning import plan

    model = tiny_model("qwen2", num_hidden_layers=2)
    monkeypatch.setattr(analysis, "_gpu_gib", lambda: None)
    assert analysis.auto_batches(model, eap_seq_len=300, eap_labelled=40) == (
        analysis.CPU_GENERATION_BATCH,
        analysis.CPU_EAP_CHUNK,
    )
    monkeypatch.setattr(analysis, "_gpu_gib", lambda: 0.9)
    expected = plan(
        model.config,
        device=0.9,
        eap_seq_len=300,
        eap_labelled=40,
        prompt_len=512,
        max_new_tokens=1024,
        dtype="float32",
    )
    got = analysis.auto_batches(model, eap_seq_len=300, eap_labelled=40)
    assert got == (expected.generation_batch, expected.eap_batch)
    assert got[1] >= 1
