"""Known-answer tests of the confidence controls (helpers.controls) and the objective hook."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import controls as C
from helpers.eap import EdgeScores, edge_scores, per_sample_loss
from helpers.evaluation.selection import Selection, truncation_batch
from helpers.graph import residual_graph
from helpers.tiny_models import tiny_model

VOCAB = 64


def greedy(model, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Greedy continuations of n tokens of equal-length prompts, batched (tiny models only)."""
    ids = torch.tensor(prompts)
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[:, len(prompts[0]) :].tolist()


def selection(prompts, base_answers, tuned_answers, t_cut: int) -> Selection:
    """A Selection as select_questions builds it, from given answers."""
    batches = {
        "base": truncation_batch(prompts, base_answers, t_cut, 0),
        "tuned": truncation_batch(prompts, tuned_answers, t_cut, 0),
    }
    ids = [str(i) for i in range(len(prompts))]
    return Selection(ids, float(t_cut), t_cut, {}, batches, pd.DataFrame())


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (8,), generator=g).tolist() for _ in range(n)]


def test_margin_objective_is_the_answer_logit_over_the_runner_up() -> None:
    logits = torch.tensor([[[0.0, 1.0, 3.0], [2.0, 0.5, 1.0], [9.0, 9.0, 9.0]]])
    labels = torch.tensor([[-100, 2, 0]])  # position 0 predicts 2, position 1 predicts 0
    # margins: 3 - 1 = 2 at position 0, 2 - 1 = 1 at position 1; the objective is minus the mean.
    assert C.margin_objective(logits, labels).tolist() == [-1.5]


def test_objective_hook_and_gradient_norms_match_autograd() -> None:
    model = tiny_model("qwen2", vocab_size=VOCAB, seed=4, initializer_range=0.2)
    ids = torch.randint(3, VOCAB, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :7] = -100
    for objective in (None, C.margin_objective):
        got = edge_scores(model, ids, None, labels, objective=objective)
        logits = model(input_ids=ids).logits.detach().requires_grad_(True)
        value = (objective or per_sample_loss)(logits, labels)
        (grad,) = torch.autograd.grad(value.sum(), logits)
        torch.testing.assert_close(got.loss, value.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(
            got.grad_norm_logits, grad.flatten(1).norm(dim=1), rtol=1e-5, atol=0
        )
        assert got.objective == ("nll" if objective is None else "margin_objective")
        # The final residual's gradient: the column of the logits target sums to -<r, dL/dr>,
        # and |dL/dr| is positive and differs from |dL/dlogits|.
        assert bool((got.grad_norm_resid > 0).all())
        assert not torch.allclose(got.grad_norm_resid, got.grad_norm_logits)
    # The margin's gradient at the logits is e_answer - e_runner-up per token: norm sqrt(2)/T.
    margin = edge_scores(model, ids, None, labels, objective=C.margin_objective)
    torch.testing.assert_close(margin.grad_norm_logits, torch.full((3,), 2**0.5 / 5 * 5**0.5))


@pytest.mark.parametrize(("family", "scale"), [("llama", 2.0), ("llama", 0.5), ("mistral", 2.0)])
def test_scaling_the_unembedding_moves_raw_intensity_but_not_the_residual_normalised(
    family: str, scale: float
) -> None:
    """Scaling W_U alone leaves every residual activation (the circuit) as it is, changes the
    confidence, and keeps the greedy answers. Raw intensity moves; divided by |dL/d residual| it
    moves less than 15% as much. Dividing by the loss or |dL/dlogits| does not remove the
    unembedding's gain: both move more than the residual normalisation (the docstring's claim)."""
    base = tiny_model(family, vocab_size=VOCAB, seed=3, initializer_range=0.3)
    tuned = copy.deepcopy(base)
    with torch.no_grad():
        tuned.lm_head.weight.mul_(scale)
    ps = prompts(24)
    answers = greedy(base, ps, 6)
    assert answers == greedy(tuned, ps, 6)
    sel = selection(ps, answers, answers, 6)
    names = ["raw", "per_loss", "per_grad_logits", "per_grad_resid"]
    scores = C.control_scores(C.direct_scorer(), base, tuned, sel, names)
    assert scores["raw"][0].loss.mean() != pytest.approx(
        float(scores["raw"][1].loss.mean()), rel=0.2
    )
    table = C.control_table([scores], names, n_boot=200).set_index(["control", "metric"])
    rel = table["rel_change"].xs("intensity", level="metric")
    assert abs(rel["raw"]) > 0.2
    ratio = abs(rel["per_grad_resid"]) / abs(rel["raw"])
    assert ratio < 0.15, ratio
    assert abs(rel["per_loss"]) > 3 * abs(rel["per_grad_resid"])
    assert abs(rel["per_grad_logits"]) > 3 * abs(rel["per_grad_resid"])
    # Per-sample rescaling leaves the scale-free metrics exactly as they were.
    for metric in ("kurtosis", "diversity", "edge_entropy"):
        assert table.loc[("per_grad_resid", metric), "rel_change"] == pytest.approx(
            table.loc[("raw", metric), "rel_change"], rel=1e-5
        )


def test_identical_models_show_no_change_on_the_same_text() -> None:
    """The same weights on different answers: raw differs (text), same text is exactly zero."""
    model = tiny_model("llama", vocab_size=VOCAB, seed=5, initializer_range=0.2)
    ps = prompts(12, seed=2)
    base_answers = greedy(model, ps, 5)
    other = [[(t * 7 + 3) % (VOCAB - 3) + 3 for t in a] for a in base_answers]
    sel = selection(ps, base_answers, other, 5)
    names = ["raw", "same_text_base", "same_text_tuned"]
    scores = C.control_scores(C.direct_scorer(), model, copy.deepcopy(model), sel, names)
    table = C.control_table([scores], names, n_boot=200).set_index(["control", "metric"])
    for control in ("same_text_base", "same_text_tuned"):
        t = table.loc[control]
        np.testing.assert_array_equal(t["change"], 0.0)
        np.testing.assert_array_equal(t["p_boot"], 1.0)
        assert not t["ci_excludes_zero"].any()
    assert table.loc[("raw", "intensity"), "change"] != 0


def test_no_first_token_is_undefined_at_t_cut_one_and_a_window_otherwise() -> None:
    model = tiny_model("llama", vocab_size=VOCAB, seed=5, initializer_range=0.2)
    ps = prompts(6, seed=3)
    answers = greedy(model, ps, 3)
    one = C.control_scores(
        C.direct_scorer(), model, model, selection(ps, answers, answers, 1), ["no_first_token"]
    )
    assert "no_first_token" not in one
    table = C.control_table([one], ["no_first_token"], n_boot=50)
    assert table["p_boot"].isna().all() and (table["control"] == "no_first_token").all()
    three = C.control_scores(
        C.direct_scorer(), model, model, selection(ps, answers, answers, 3), ["no_first_token"]
    )
    batch = C.without_first_token(selection(ps, answers, answers, 3).batches["base"])
    assert (batch.labels != -100).sum(-1).tolist() == [2] * 6
    direct = edge_scores(model, batch.input_ids, batch.attention_mask, batch.labels)
    torch.testing.assert_close(three["no_first_token"][0].scores, direct.scores)


def synthetic(losses: np.ndarray, intensity: np.ndarray, seed: int) -> EdgeScores:
    """Scores whose per-sample intensity is exactly `intensity` (random signs, equal |W|)."""
    graph = residual_graph(2)
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(len(losses), *graph.mask.shape))
    scores = torch.tensor(
        signs * intensity[:, None, None] * graph.mask.numpy(), dtype=torch.float32
    )
    return EdgeScores(
        scores, graph.sources, graph.targets, graph.mask, torch.tensor(losses, dtype=torch.float32)
    )


def test_regression_recovers_intensity_at_equal_confidence() -> None:
    """Intensity = loss^0.8 on both models, tuned twice as confident: raw intensity falls, the
    model effect at equal loss is zero; with tuned 1.5x stronger at equal loss it is +50%."""
    loss = np.random.default_rng(0).uniform(0.2, 2.0, size=40)
    base = synthetic(loss, loss**0.8, 0)
    same = synthetic(loss / 2, (loss / 2) ** 0.8, 1)
    stronger = synthetic(loss / 2, 1.5 * (loss / 2) ** 0.8, 2)
    flat = C.regression_table([(base, same)], n_boot=300).set_index("metric")
    up = C.regression_table([(base, stronger)], n_boot=300).set_index("metric")
    assert flat.loc["intensity", "rel_change"] == pytest.approx(0.0, abs=1e-4)
    assert up.loc["intensity", "rel_change"] == pytest.approx(0.5, rel=1e-3)
    assert up.loc["intensity", "p_boot"] < 0.05 and up.loc["intensity", "matches_claim"]
    assert flat.loc["diversity"].isna()["rel_change"]  # set-level metric: no per-question value
    raw = C.control_table([{"raw": (base, same)}], ["raw"], n_boot=100).set_index("metric")
    assert raw.loc["intensity", "rel_change"] == pytest.approx(0.5**0.8 - 1, rel=1e-3)
    # Losses halved: the two models' losses overlap where both ranges meet.
    assert 0 < flat["loss_overlap"].iloc[0] < 1


def test_loss_overlap_hand_computed() -> None:
    assert C.loss_overlap(np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0])) == pytest.approx(0.4)
    assert C.loss_overlap(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0


def test_unknown_control_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="per_grad_resid"):
        C.check_controls(["raw", "per_gradient"])


def test_pair_spec_names_its_controls_and_seeds() -> None:
    from helpers.specs import PairSpec

    spec = PairSpec.from_params(
        {
            "pair": "p",
            "base": "b",
            "tuned": "t",
            "tuned_seeds": ["t1", "t2"],
            "controls": ["margin", "raw"],
        }
    )
    assert spec.control_names() == ["raw", "margin"]  # the report's order
    assert spec.to_params()["tuned_seeds"] == ["t1", "t2"]
    assert PairSpec.from_params({"pair": "p", "base": "b", "tuned": "t"}).control_names() == list(
        C.CONTROLS
    )
    problems = PairSpec.errors({"controls": ["raw", "bogus"], "token_profile": -1})
    assert any("bogus" in p and "per_grad_resid" in p for p in problems)
    assert any("token_profile" in p for p in problems)
    assert PairSpec.errors({"tuned": "t", "tuned_seeds": ["t"]})  # a seed must differ from tuned
