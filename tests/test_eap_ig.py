"""EAP-IG: m = 1 is EAP, m = 2 matches an independent hook implementation of the path, it is
closer to exact zero-ablation than EAP, and its inputs are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_eap import make_batch

from helpers import eap
from helpers.ablation import edge_ablation_effects
from helpers.eap import edge_scores, path_scales, per_sample_loss, position_ids_from_mask
from helpers.tiny_models import tiny_model


def _hook_gradient(model, ids, mask, labels, source: int, a: float) -> torch.Tensor:
    """[batch, S, T] -O_u . dL/d in_v with source `source` scaled by `a`, by plain hooks."""
    inner = model.model
    modules = [inner.embed_tokens]
    norms = []
    for layer in inner.layers:
        modules += [layer.self_attn, layer.mlp]
        norms += [layer.input_layernorm, layer.post_attention_layernorm]
    norms.append(inner.norm)
    clean: dict[int, torch.Tensor] = {}
    inputs: list[torch.Tensor] = []

    def out_hook(index):
        def hook(_m, _a, out):
            hidden = out[0] if isinstance(out, tuple) else out
            clean[index] = hidden.detach()
            if index != source:
                return None
            scaled = hidden * a
            return (scaled, *out[1:]) if isinstance(out, tuple) else scaled

        return hook

    def in_hook(_m, args):
        x = args[0].clone()
        inputs.append(x)
        return (x, *args[1:])

    handles = [m.register_forward_hook(out_hook(i)) for i, m in enumerate(modules)]
    handles += [n.register_forward_pre_hook(in_hook) for n in norms]
    try:
        with torch.enable_grad():
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
            ).logits
            grads = torch.autograd.grad(per_sample_loss(logits, labels).sum(), inputs)
    finally:
        for h in handles:
            h.remove()
    out = torch.zeros(ids.shape[0], len(modules), len(norms), dtype=torch.float64)
    weight = mask.double()[..., None]
    for t, g in enumerate(grads):
        for s in range(t + 1):
            out[:, s, t] = -(clean[s].double() * weight * g.double()).sum((1, 2))
    return out


def test_one_step_is_eap_exactly() -> None:
    model = tiny_model("llama")
    batch = make_batch([12, 9], 12)
    plain = edge_scores(model, *batch)
    ig = edge_scores(model, *batch, method="eap-ig", m=1)
    assert torch.equal(plain.scores, ig.scores) and ig.method == "eap-ig" and ig.steps == 1


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_two_steps_average_the_clean_and_the_half_scaled_gradient(family: str) -> None:
    model = tiny_model(family, dtype=torch.float64)
    ids, mask, labels = make_batch([12, 9], 12, side="left")
    ig = edge_scores(model, ids, mask, labels, method="eap-ig", m=2)
    clean = _hook_gradient(model, ids, mask, labels, source=-1, a=1.0)
    expected = clean.clone()
    for s in range(clean.shape[1]):
        expected[:, s] = (clean[:, s] + _hook_gradient(model, ids, mask, labels, s, 0.5)[:, s]) / 2
    real = ig.mask
    torch.testing.assert_close(ig.scores.double()[:, real], expected[:, real], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ig.loss, edge_scores(model, ids, mask, labels).loss)


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_closer_to_exact_ablation_than_eap(family: str) -> None:
    """At full zero-ablation, EAP-IG's error against the exact effect is smaller than EAP's."""
    model = tiny_model(family, num_hidden_layers=3)
    ids, mask, labels = make_batch([20, 16, 12, 18], 20)
    exact = edge_ablation_effects(model, ids, mask, labels, progress=False).effects
    plain = edge_scores(model, ids, mask, labels)
    ig = edge_scores(model, ids, mask, labels, method="eap-ig", m=8)
    real = plain.mask.numpy()
    truth = exact[:, real]
    err_eap = np.abs(plain.scores.double().numpy()[:, real] - truth).mean()
    err_ig = np.abs(ig.scores.double().numpy()[:, real] - truth).mean()
    assert err_ig < 0.8 * err_eap, (err_ig, err_eap)
    r_eap = np.corrcoef(plain.scores.double().numpy()[:, real].ravel(), truth.ravel())[0, 1]
    r_ig = np.corrcoef(ig.scores.double().numpy()[:, real].ravel(), truth.ravel())[0, 1]
    assert r_ig > r_eap


def test_split_traces_and_batching_do_not_change_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama")
    batch = make_batch([12, 9, 11], 12)
    whole = edge_scores(model, *batch, method="eap-ig", m=3)
    monkeypatch.setattr(eap, "IG_ROWS", 4)  # 1 source per trace for 3 samples
    split = edge_scores(model, *batch, method="eap-ig", m=3)
    torch.testing.assert_close(split.scores, whole.scores, rtol=1e-4, atol=1e-6)
    alone = edge_scores(model, *(t[1:2] for t in batch), method="eap-ig", m=3)
    torch.testing.assert_close(alone.scores[0], whole.scores[1], rtol=1e-4, atol=1e-6)


def test_path_scales_known_values() -> None:
    weights = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    scales = path_scales(weights, torch.tensor([2, 0]), n_nodes=3, a=0.25)
    assert scales.shape == (2, 3, 3)
    torch.testing.assert_close(scales[0, 2], torch.tensor([0.25, 0.25, 1.0]))
    torch.testing.assert_close(scales[1, 0], torch.tensor([1.0, 0.25, 0.25]))
    assert scales[0, :2].eq(1).all() and scales[1, 1:].eq(1).all()


def test_bad_method_or_steps_name_the_fix() -> None:
    model = tiny_model("llama")
    batch = make_batch([8], 8)
    with pytest.raises(ValueError, match="method must be one of"):
        edge_scores(model, *batch, method="ig")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer >= 1"):
        edge_scores(model, *batch, method="eap-ig", m=0)


def test_concat_refuses_mixed_methods() -> None:
    model = tiny_model("llama")
    batch = make_batch([8], 8)
    a = edge_scores(model, *batch)
    b = edge_scores(model, *batch, method="eap-ig", m=2)
    with pytest.raises(ValueError, match="methods"):
        eap.concat([a, b])
