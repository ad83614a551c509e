"""Knock-outs are exact (a hand-written forward, zeroed modules, plain generation at k = 0, the
KV cache of `generate`), and the edge sets, intervals and tables of `helpers.causal` are right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import causal
from helpers.ablation import check_edges, edge_ablation_effects, knocked_out, source_means
from helpers.eap import edge_scores, per_sample_loss
from helpers.evaluation import ModelBatch
from helpers.graph import residual_graph
from helpers.organisms.evaluate import generate
from helpers.organisms.tasks import make_problems
from helpers.organisms.tokenizer import build_tokenizer
from helpers.tiny_models import tiny_model


def _model(layers: int = 2, **kw):
    return tiny_model("llama", num_hidden_layers=layers, vocab_size=len(build_tokenizer()), **kw)


def _ids(n: int = 2, seq: int = 10, vocab: int = 53) -> torch.Tensor:
    return torch.randint(3, vocab, (n, seq), generator=torch.Generator().manual_seed(1))


def manual_logits(
    model,
    ids: torch.Tensor,
    removed: tuple[int, int] | None,
    scale: float = 1.0,
    baseline: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of a forward written out module by module, with scale * (O_u - b_u) subtracted
    from v's input (b_u = 0 without a baseline)."""
    inner = model.model
    seq = ids.shape[1]
    pos = torch.arange(seq)[None].expand(ids.shape[0], -1)
    mask = torch.full((seq, seq), float("-inf")).triu(1)[None, None]
    outs = [inner.embed_tokens(ids)]
    resid = outs[0]
    rope = inner.rotary_emb(resid, pos)

    def branch_input(target: int) -> torch.Tensor:
        if removed is not None and removed[1] == target:
            shift = outs[removed[0]] - (0.0 if baseline is None else baseline)
            return resid - scale * shift
        return resid

    for index, layer in enumerate(inner.layers):
        x = layer.input_layernorm(branch_input(2 * index))
        attn = layer.self_attn(hidden_states=x, position_embeddings=rope, attention_mask=mask)[0]
        outs.append(attn)
        resid = resid + attn
        mlp = layer.mlp(layer.post_attention_layernorm(branch_input(2 * index + 1)))
        outs.append(mlp)
        resid = resid + mlp
    return model.lm_head(inner.norm(branch_input(2 * len(inner.layers))))


@torch.no_grad()
def test_plain_manual_forward_is_the_model() -> None:
    model = _model()
    ids = _ids()
    torch.testing.assert_close(manual_logits(model, ids, None), model(input_ids=ids).logits)


@torch.no_grad()
@pytest.mark.parametrize("edge", [(0, 0), (0, 4), (1, 1), (2, 3), (3, 4), (4, 4)])
def test_knocked_out_edge_equals_the_hand_written_subtraction(edge: tuple[int, int]) -> None:
    model = _model()
    ids = _ids()
    with knocked_out(model, [edge]):
        got = model(input_ids=ids).logits
    want = manual_logits(model, ids, edge)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, model(input_ids=ids).logits, atol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("edge", [(0, 2), (1, 4), (3, 3)])
def test_partial_and_mean_removal_equal_the_hand_written_forward(edge: tuple[int, int]) -> None:
    model = _model()
    ids = _ids()
    means = source_means(model, ids, torch.ones_like(ids))
    for scale, baseline in ((0.5, None), (1.0, means), (0.3, means)):
        with knocked_out(model, [edge], scale=scale, baseline=baseline):
            got = model(input_ids=ids).logits
        b = None if baseline is None else baseline[edge[0]]
        torch.testing.assert_close(
            got, manual_logits(model, ids, edge, scale, b), rtol=1e-5, atol=1e-5
        )


@torch.no_grad()
def test_source_means_average_real_tokens_only() -> None:
    model = _model()
    ids = _ids(n=2, seq=6)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # the second row's last two positions are padding
    means = source_means(model, ids, mask)
    emb = model.model.embed_tokens(ids)
    want = torch.cat([emb[0], emb[1, :4]]).mean(0)
    torch.testing.assert_close(means[0], want)
    assert set(means) == set(range(5))  # emb, attn.0, mlp.0, attn.1, mlp.1


@torch.no_grad()
def test_mean_removal_of_everything_makes_the_output_input_independent() -> None:
    model = _model()
    ids = _ids()
    graph = residual_graph(2)
    every = [(int(s), int(t)) for s, t in graph.edge_index().tolist()]
    means = source_means(model, ids, torch.ones_like(ids))
    with knocked_out(model, every, baseline=means):
        logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits[0], logits[1])  # different inputs, same output
    torch.testing.assert_close(logits[0, 0], logits[0, -1])


def test_removal_fraction_and_baseline_name_the_fix() -> None:
    model = _model()
    with pytest.raises(ValueError, match="0 < scale <= 1"), knocked_out(model, [(0, 0)], scale=0):
        pass
    no_means = knocked_out(model, [(1, 2)], baseline={0: torch.zeros(8)})
    with pytest.raises(ValueError, match="source_means"), no_means:
        pass


@torch.no_grad()
@pytest.mark.parametrize("source", [0, 1, 2, 3, 4])
def test_all_edges_of_a_source_equal_zeroing_its_module(source: int) -> None:
    model = _model()
    ids = _ids()
    graph = residual_graph(2)
    edges = [(source, t) for t in range(graph.mask.shape[1]) if graph.mask[source, t]]
    with knocked_out(model, edges):
        got = model(input_ids=ids).logits
    modules = [model.model.embed_tokens]
    for layer in model.model.layers:
        modules += [layer.self_attn, layer.mlp]

    def zero(_m, _a, out):
        if isinstance(out, tuple):
            return (torch.zeros_like(out[0]), *out[1:])
        return torch.zeros_like(out)

    handle = modules[source].register_forward_hook(zero)
    try:
        want = model(input_ids=ids).logits
    finally:
        handle.remove()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_single_knock_out_loss_matches_exact_edge_ablation() -> None:
    model = _model()
    ids = _ids(3, 12)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :5] = -100
    batch = ModelBatch(ids, mask, labels)
    exact = edge_ablation_effects(model, ids, mask, labels, progress=False)
    clean = causal.ablated_loss(model, batch, [])
    np.testing.assert_allclose(clean, exact.clean_loss, rtol=1e-6)
    for edge in [(0, 2), (1, 4), (3, 3)]:
        got = causal.ablated_loss(model, batch, [edge]) - clean
        np.testing.assert_allclose(got, exact.effects[:, edge[0], edge[1]], rtol=1e-4, atol=1e-7)


def test_generation_with_no_edges_removed_is_plain_generation() -> None:
    tok = build_tokenizer()
    model = _model()
    prompts = ["start with 5, add 3.", "start with 12, times 2, take 4."]
    plain = generate(model, tok, prompts, max_new_tokens=12, batch_size=2)
    with knocked_out(model, []):
        same = generate(model, tok, prompts, max_new_tokens=12, batch_size=2)
    assert same.completions == plain.completions and same.lengths == plain.lengths


@torch.no_grad()
def test_knock_out_holds_at_every_cached_generation_step() -> None:
    """Greedy `generate` (KV cache) with edges removed equals argmax decoding by full forwards."""
    model = _model()
    ids = _ids(1, 6)
    edges = [(0, 2), (1, 3), (2, 4)]
    with knocked_out(model, edges):
        cached = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
            do_sample=False, pad_token_id=0, eos_token_id=None,
        )[0, ids.shape[1]:]  # fmt: skip
        seq = ids
        for _ in range(8):
            nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    assert cached.tolist() == seq[0, ids.shape[1] :].tolist()
    plain = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
        pad_token_id=0, eos_token_id=None,
    )[0, ids.shape[1]:]  # fmt: skip
    assert plain.tolist() != cached.tolist()


def test_bad_edges_name_the_fix() -> None:
    with pytest.raises(ValueError, match="0 <= source <= target"):
        check_edges([(3, 1)], 2)
    with pytest.raises(ValueError, match="not in the 2-layer"):
        check_edges([(0, 9)], 2)


# --------------------------------------------------------------------------- edge sets


def test_k_grid_is_log_spaced_and_ends_at_all_edges() -> None:
    assert causal.k_grid(91, 6) == [1, 2, 6, 15, 37, 91]
    assert causal.k_grid(1, 4) == [1]


def test_top_random_and_mass_matched_sets() -> None:
    attr = np.array([5.0, 0.1, 3.0, 0.2, 1.0, 0.5, 0.4, 2.0])
    assert causal.top_edges(attr, 3).tolist() == [0, 2, 7]
    rng = np.random.default_rng(0)
    r = causal.random_edges(8, 3, rng, exclude=[0, 2, 7])
    assert len(set(r.tolist())) == 3 and not set(r.tolist()) & {0, 2, 7}
    mm = causal.mass_matched_edges(attr, 2, target=1.4, rng=rng, exclude=[0])
    assert abs(attr[mm].sum() - 1.4) < 1e-9  # 1.0 + 0.4
    # unreachable target (the top-3's mass, outside the top-3): the heaviest remaining edges
    heavy = causal.mass_matched_edges(attr, 3, target=10.0, rng=rng, exclude=[0, 2, 7])
    assert sorted(heavy.tolist()) == [4, 5, 6]


def test_knockout_sets_layout() -> None:
    attr = np.linspace(1, 0.1, 10)
    sets = causal.knockout_sets(attr, [1, 4], n_random=2, seed=0)
    assert [(s.kind, s.k, s.draw) for s in sets] == [
        ("top", 1, 0), ("random", 1, 0), ("random", 1, 1), ("mass-matched", 1, 0),
        ("top", 4, 0), ("random", 4, 0), ("random", 4, 1), ("mass-matched", 4, 0),
    ]  # fmt: skip
    assert sets[4].edges == (0, 1, 2, 3) and sets[4].mass == pytest.approx(attr[:4].sum())
    assert not set(sets[5].edges) & set(sets[4].edges)


def test_grown_edges_rank_by_rise() -> None:
    model = _model(1)
    ids = _ids(2, 8)
    labels = ids.clone()
    labels[:, :3] = -100
    base = edge_scores(model, ids, None, labels)
    tuned = edge_scores(model, ids, None, labels)
    tuned.scores = tuned.scores.clone()
    tuned.scores[:, 0, 2] += 10.0  # emb -> logits: edge index 2 in edge_names order
    assert base.edge_names()[2] == "emb->logits"
    assert causal.grown_edges(base, tuned, 1).tolist() == [2]


# --------------------------------------------------------------------------- intervals, tables


def test_pooled_mean_known_values() -> None:
    point, lo, hi = causal.pooled_mean([np.array([0.0, 1.0, 1.0, 0.0])], n_boot=2000)
    assert point == 0.5 and 0.0 <= lo < 0.5 < hi <= 1.0
    same = causal.pooled_mean([np.ones(5), np.ones(5)], n_boot=100)
    assert same == (1.0, 1.0, 1.0)
    two = causal.pooled_mean([np.zeros(4), np.ones(4)], n_boot=500)
    assert two[0] == 0.5 and two[1] == 0.0 and two[2] == 1.0


def _fake_run(name: str, drop: float) -> causal.Knockouts:
    sets = [
        causal.EdgeSet("top", 2, 0, (0, 1), 3.0),
        causal.EdgeSet("random", 2, 0, (2, 3), 1.0),
        causal.EdgeSet("random", 2, 1, (3, 4), 1.0),
        causal.EdgeSet("mass-matched", 2, 0, (2, 5), 2.0),
    ]
    clean = np.array([True, True, True, True])
    correct = np.array([[False, True, True, True], clean, [True, True, True, False], clean])
    loss = np.array([[drop] * 3, [0.0] * 3, [0.2] * 3, [0.1] * 3])
    return causal.Knockouts(name, sets, loss, correct, np.zeros(3), clean, 6.0)


def test_curve_and_grown_tables() -> None:
    curve = causal.curve_table([_fake_run("a", 1.0)], model="tuned", n_boot=200)
    top = curve[(curve["kind"] == "top") & (curve["k"] == 2)].iloc[0]
    assert top["accuracy"] == 0.75 and top["accuracy_drop"] == 0.25 and top["loss_change"] == 1.0
    rnd = curve[(curve["kind"] == "random") & (curve["k"] == 2)].iloc[0]
    assert rnd["accuracy"] == 0.875 and rnd["loss_change"] == pytest.approx(0.1)
    assert rnd["mass_share"] == pytest.approx(1 / 6)
    assert set(curve[curve["k"] == 0]["accuracy"]) == {1.0}
    grown = causal.grown_table(
        [_fake_run("a", 1.0), _fake_run("b", 1.0)], pair="p", algorithm="PPO"
    )
    g = grown.set_index("set")
    assert g.loc["grown", "accuracy_drop"] == 0.25 and g.loc["grown", "seeds"] == 2
    assert g.loc["random", "excess_drop"] == pytest.approx(0.125)
    assert g.loc["mass-matched", "excess_drop"] == pytest.approx(0.25)


def test_run_knockouts_on_a_tiny_model() -> None:
    tok = build_tokenizer()
    model = _model()
    problems = make_problems("test", 3, seed=0)
    ids = _ids(2, 10, len(tok))
    labels = ids.clone()
    labels[:, :4] = -100
    batch = ModelBatch(ids, torch.ones_like(ids), labels)
    scores = edge_scores(model, ids, None, labels)
    sets = causal.knockout_sets(causal.attribution(scores), [1, 15], n_random=1, seed=0)
    run = causal.run_knockouts(
        model, tok, scores, batch, problems, sets, name="x", max_new_tokens=6, progress=False
    )
    assert run.loss.shape == (6, 2) and run.correct.shape == (6, 3)
    all_out = per_sample_loss(model(input_ids=ids).logits, labels)  # plain loss, for scale
    assert np.isfinite(run.loss).all() and np.all(run.loss[3] == run.loss[4])  # k=15: every edge
    assert run.clean_loss == pytest.approx(all_out.detach().double().numpy())


def test_faithfulness_table_and_preferred_method() -> None:
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(6, 10))
    res = causal.Faithfulness(
        "m", 0.3, {"eap": exact + rng.normal(size=exact.shape), "eap-ig": exact * 2}, exact, {}
    )
    table = causal.faithfulness_table([res], top_k=(3,), n_boot=50)
    ig = table[(table["method"] == "eap-ig") & (table["view"] == "per question")]
    values = ig.set_index("statistic")["value"]
    assert values["pearson"] == pytest.approx(1.0) and values["sign_agreement"] == 1.0
    assert values["rel_error"] == pytest.approx(1.0) and values["top3_overlap"] == 1.0
    assert (table["low"] <= table["value"] + 1e-12).all()
    method, wins, total = causal.preferred_method(table)
    assert method == "eap-ig" and total == 5 and wins >= 4
    assert isinstance(table, pd.DataFrame)
