"""EAP scores against an independent plain-PyTorch implementation, the sum rule, a real patched
forward (linearisation), batch/padding invariance, and the promises about parameters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nnsight import NNsight
from transformers import GPT2Config, GPT2LMHeadModel

from helpers.architectures import UnsupportedArchitecture
from helpers.eap import EdgeScores, concat, edge_scores, score_batches
from helpers.tiny_models import FAMILIES, tiny_model

SEQ = 20  # longer than the mistral sliding window (8)


def make_batch(
    lengths: list[int], seq: int, *, side: str = "right", seed: int = 0, vocab: int = 128
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids padded to `seq` on `side`; the last 60% of each sample's tokens are labelled."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, n in enumerate(lengths):
        tokens = torch.randint(3, vocab, (n,), generator=g)
        span = slice(0, n) if side == "right" else slice(seq - n, seq)
        ids[row, span] = tokens
        mask[row, span] = 1
        sample_labels = tokens.clone()
        sample_labels[: n - max(1, int(0.6 * n))] = -100
        labels[row, span] = sample_labels
    return ids, mask, labels


# ----------------------------------------------------------------------------------------------
# Independent reference: forward hooks on the modules by their transformers names, parameters
# left trainable, torch.autograd.grad, a per-sample loss loop and float64 products.
# ----------------------------------------------------------------------------------------------


def reference_pass(model, ids, mask, labels, weights):
    """(scores [B,S,S] float64, source outputs, branch inputs, branch gradients, losses)."""
    outputs: list[torch.Tensor] = []
    branch_inputs: list[torch.Tensor] = []

    def keep_output(module, args, out):
        outputs.append(out[0] if isinstance(out, tuple) else out)

    def clone_input(module, args):
        x = args[0].clone()
        branch_inputs.append(x)
        return (x, *args[1:])

    inner = model.model
    handles = [inner.embed_tokens.register_forward_hook(keep_output)]
    for layer in inner.layers:
        handles += [
            layer.input_layernorm.register_forward_pre_hook(clone_input),
            layer.self_attn.register_forward_hook(keep_output),
            layer.post_attention_layernorm.register_forward_pre_hook(clone_input),
            layer.mlp.register_forward_hook(keep_output),
        ]
    handles.append(inner.norm.register_forward_pre_hook(clone_input))
    positions = torch.stack(
        [torch.clamp(torch.arange(row.numel()) - int(row.argmax()), min=0) for row in mask]
    )
    try:
        with torch.enable_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            losses = []
            for b in range(ids.shape[0]):
                keep = labels[b, 1:] != -100
                losses.append(F.cross_entropy(logits[b, :-1][keep].float(), labels[b, 1:][keep]))
            losses = torch.stack(losses)
            grads = torch.autograd.grad(losses.sum(), branch_inputs)
    finally:
        for handle in handles:
            handle.remove()
    n = len(outputs)
    scores = torch.zeros(ids.shape[0], n, n, dtype=torch.float64)
    w = weights.double()[..., None]
    for i in range(n):
        for j in range(i, n):
            prod = outputs[i].detach().double() * grads[j].double() * w
            scores[:, i, j] = -prod.sum((1, 2))
    sources = [o.detach() for o in outputs]
    return scores, sources, [x.detach() for x in branch_inputs], grads, losses.detach()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return tiny_model(request.param, seed=1, initializer_range=0.1)


def test_tiny_models_have_the_structural_features() -> None:
    assert all(tiny_model(f).config.num_key_value_heads == 2 for f in FAMILIES)  # GQA: 4 q heads
    qwen2 = tiny_model("qwen2")
    assert qwen2.model.layers[0].self_attn.q_proj.bias is not None
    assert qwen2.lm_head.weight is qwen2.model.embed_tokens.weight
    qwen3 = tiny_model("qwen3")
    assert qwen3.lm_head.weight is qwen3.model.embed_tokens.weight
    llama = tiny_model("llama")
    assert llama.lm_head.weight is not llama.model.embed_tokens.weight
    # The mistral window really bites: with one layer, the last position cannot see token 0.
    mistral = tiny_model("mistral", num_hidden_layers=1)
    assert mistral.config.sliding_window < SEQ
    ids, mask, _ = make_batch([SEQ], SEQ)
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % 128
    with torch.no_grad():
        a, b = mistral(ids).logits, mistral(changed).logits
    assert torch.equal(a[0, -1], b[0, -1])
    assert not torch.equal(a[0, 1], b[0, 1])


def test_matches_independent_hook_implementation(model) -> None:
    ids, mask, labels = make_batch([SEQ, 15, 11], SEQ, side="right")
    result = edge_scores(model, ids, mask, labels)
    ref, _, _, _, ref_loss = reference_pass(model, ids, mask, labels, mask.float())
    assert isinstance(result, EdgeScores)
    assert result.scores.dtype == torch.float32 and result.loss.dtype == torch.float32
    assert result.scores.shape == (3, 5, 5)
    assert result.sources == ["emb", "attn.0", "mlp.0", "attn.1", "mlp.1"]
    assert result.targets == ["attn.0", "mlp.0", "attn.1", "mlp.1", "logits"]
    assert torch.equal(result.scores[:, ~result.mask], torch.zeros(3, 10))
    assert torch.allclose(result.loss, ref_loss, rtol=1e-6)
    for b in range(3):
        assert rel_err(result.scores[b], ref[b]) < 1e-5


def test_loss_is_transformers_mean_nll_per_sample(model) -> None:
    ids, mask, labels = make_batch([SEQ, 12], SEQ, side="right", seed=3)
    result = edge_scores(model, ids, mask, labels)
    for b in range(2):
        n = int(mask[b].sum())
        with torch.no_grad():
            expected = model(ids[b : b + 1, :n], labels=labels[b : b + 1, :n]).loss
        assert torch.allclose(result.loss[b], expected, rtol=1e-5)


def test_labelled_positions_option(model) -> None:
    """positions='labelled' sums over t with labels[t+1] labelled, i.e. where the loss is read."""
    ids, mask, labels = make_batch([SEQ, 13], SEQ, side="left", seed=4)
    result = edge_scores(model, ids, mask, labels, positions="labelled")
    weights = torch.zeros(ids.shape)
    weights[:, :-1] = (labels[:, 1:] != -100).float()
    ref, _, _, _, _ = reference_pass(model, ids, mask, labels, weights)
    for b in range(2):
        assert rel_err(result.scores[b], ref[b]) < 1e-5
    everything = edge_scores(model, ids, mask, labels)
    assert rel_err(result.scores, everything.scores) > 1e-3  # the restriction matters
    # The logits column only has gradient where the loss is read, so it is the same either way.
    assert torch.allclose(result.scores[..., -1], everything.scores[..., -1], rtol=1e-5, atol=1e-9)


def test_sum_rule(model) -> None:
    """Scores into a target sum to -<in_v, dL/d in_v>: the residual stream is the sum of sources."""
    ids, mask, labels = make_batch([SEQ, 16], SEQ, side="left", seed=5)
    result = edge_scores(model, ids, mask, labels)
    _, outputs, inputs, grads, _ = reference_pass(model, ids, mask, labels, mask.float())
    w = mask.double()[..., None]
    for j, (x, g) in enumerate(zip(inputs, grads, strict=True)):
        expected = -(x.double() * g.double() * w).sum((1, 2))
        column = result.scores[:, :, j].double()
        # RMSNorm is scale-invariant, so <in_v, grad> is ~0 up to its eps and the scores cancel:
        # the tolerance is float32 rounding of the summed |O_u * grad| terms.
        scale = sum(
            (o.double().abs() * (g.double() * w).abs()).sum((1, 2)) for o in outputs[: j + 1]
        )
        assert bool(((column.sum(1) - expected).abs() <= 1e-5 * scale).all()), j
        # A missing source is caught: leaving out any one of them breaks the rule (not for attn.0,
        # whose only source is its whole input, so that by scale invariance emb->attn.0 ~ 0).
        for i in range(j + 1 if j > 0 else 0):
            partial = column.sum(1) - column[:, i]
            assert bool(((partial - expected).abs() > 1e-5 * scale).any()), (i, j)


def loss_with_patch(model, ids, mask, labels, module, delta) -> torch.Tensor:
    """Per-sample losses of a real forward in which `delta` is added to `module`'s input only."""
    handle = module.register_forward_pre_hook(lambda mod, args: (args[0] + delta, *args[1:]))
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
    finally:
        handle.remove()
    shift = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).double(), shift, reduction="none")
    return (nll * (shift != -100)).sum(1) / (shift != -100).sum(1)


@pytest.mark.parametrize("family", FAMILIES)
def test_linearisation_with_real_patched_forward(family: str) -> None:
    """Removing eps * O_u from v's input changes the loss by eps * s(u -> v) (central diff)."""
    model = tiny_model(family, seed=2, dtype=torch.float64, initializer_range=0.1)
    ids, mask, labels = make_batch([SEQ], SEQ, seed=6)
    result = edge_scores(model, ids, mask, labels)
    outputs = []
    hooks = [model.model.embed_tokens.register_forward_hook(lambda m, a, o: outputs.append(o))]
    for layer in model.model.layers:
        hooks.append(layer.self_attn.register_forward_hook(lambda m, a, o: outputs.append(o[0])))
        hooks.append(layer.mlp.register_forward_hook(lambda m, a, o: outputs.append(o)))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    norms = [
        m
        for layer in model.model.layers
        for m in (layer.input_layernorm, layer.post_attention_layernorm)
    ]
    norms.append(model.model.norm)
    scores = result.scores[0]
    # Every edge but emb->attn.0: that one is attn.0's whole input, so by the norm's scale
    # invariance its linear term is ~0 and a finite difference measures the cubic term instead.
    edges = [(u, v) for u, v in result.mask.nonzero().tolist() if (u, v) != (0, 0)]
    eps = 1e-2
    for u, v in edges:
        up = loss_with_patch(model, ids, mask, labels, norms[v], -eps * outputs[u])
        down = loss_with_patch(model, ids, mask, labels, norms[v], eps * outputs[u])
        finite = float((up - down)[0] / (2 * eps))
        assert finite == pytest.approx(float(scores[u, v]), rel=2e-3, abs=1e-6), (u, v)


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_and_padding_invariance(model, side: str) -> None:
    lengths = [SEQ, 14, 9]
    ids, mask, labels = make_batch(lengths, SEQ, side=side, seed=7)
    batched = edge_scores(model, ids, mask, labels)
    for b, n in enumerate(lengths):
        span = slice(0, n) if side == "right" else slice(SEQ - n, SEQ)
        alone = edge_scores(
            model, ids[b : b + 1, span], mask[b : b + 1, span], labels[b : b + 1, span]
        )
        assert rel_err(batched.scores[b], alone.scores[0]) < 1e-5
        assert torch.allclose(batched.loss[b], alone.loss[0], rtol=1e-6)


def test_parameters_untouched(model) -> None:
    params = list(model.parameters())
    for k, p in enumerate(params):
        p.requires_grad_(k % 2 == 0)
        p.grad = torch.randn_like(p) if k % 3 == 0 else None
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    snapshot = [None if g is None else g.clone() for g in grads]
    model.train()
    ids, mask, labels = make_batch([SEQ, 10], SEQ)
    edge_scores(model, ids, mask, labels)
    assert [p.requires_grad for p in params] == flags
    for p, g, s in zip(params, grads, snapshot, strict=True):
        assert p.grad is g
        assert (g is None) or torch.equal(g, s)
    assert model.training
    model.eval()
    for p in params:
        p.requires_grad_(True)
        p.grad = None


def test_works_under_no_grad_and_refuses_inference_mode() -> None:
    model = tiny_model("llama")
    ids, mask, labels = make_batch([SEQ], SEQ)
    expected = edge_scores(model, ids, mask, labels)
    with torch.no_grad():
        assert torch.equal(edge_scores(model, ids, mask, labels).scores, expected.scores)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        edge_scores(model, ids, mask, labels)


def test_nnsight_model_gives_the_same_scores() -> None:
    model = tiny_model("qwen2", initializer_range=0.1)
    ids, mask, labels = make_batch([SEQ, 12], SEQ, side="left", seed=8)
    plain = edge_scores(model, ids, mask, labels)
    wrapped = edge_scores(NNsight(model), ids, mask, labels)
    assert torch.equal(plain.scores, wrapped.scores)
    assert torch.equal(plain.loss, wrapped.loss)


def word_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(128)}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="t3")),
        pad_token="t0",
        bos_token="t1",
        eos_token="t2",
    )


@pytest.mark.parametrize("lazy", [False, True])
def test_nnsight_language_model_gives_the_same_scores(lazy: bool, tmp_path) -> None:
    """The wrapper used for NDIF-hosted models, around a loaded model or lazily from a folder
    (meta weights until the trace dispatches them)."""
    from nnsight import LanguageModel

    model = tiny_model("mistral", initializer_range=0.1)
    tokenizer = word_tokenizer()
    if lazy:
        model.save_pretrained(tmp_path)
        source = str(tmp_path)
    else:
        source = model
    with pytest.warns(FutureWarning):  # LanguageModel is deprecated for TransformersModel
        language_model = LanguageModel(source, tokenizer=tokenizer)
    ids, mask, labels = make_batch([SEQ, 12], SEQ, side="left", seed=8)
    wrapped = edge_scores(language_model, ids, mask, labels)
    plain = edge_scores(model, ids, mask, labels)
    assert torch.equal(plain.scores, wrapped.scores)


def test_bfloat16_model_accumulates_in_float32() -> None:
    model = tiny_model("llama", initializer_range=0.1)
    ids, mask, labels = make_batch([SEQ, 15], SEQ, seed=9)
    full = edge_scores(model, ids, mask, labels)
    half = edge_scores(model.to(torch.bfloat16), ids, mask, labels)
    assert half.scores.dtype == torch.float32 and half.loss.dtype == torch.float32
    real = full.edge_values()
    assert rel_err(half.edge_values(), real) < 0.1
    corr = torch.corrcoef(torch.stack([half.edge_values().flatten(), real.flatten()]))[0, 1]
    assert corr > 0.99


def test_edge_values_and_names() -> None:
    model = tiny_model("llama", num_hidden_layers=3)
    ids, mask, labels = make_batch([SEQ], SEQ)
    result = edge_scores(model, ids, mask, labels)
    assert result.edge_values().shape == (1, 28)
    names = result.edge_names()
    k = names.index("attn.1->logits")
    assert result.edge_values()[0, k] == result.scores[0, 3, 6]


def test_batches_concatenate_and_round_trip(tmp_path) -> None:
    model = tiny_model("qwen3", initializer_range=0.1)
    ids, mask, labels = make_batch([SEQ, 15, 11], SEQ, side="left", seed=10)
    whole = edge_scores(model, ids, mask, labels, positions="labelled")
    parts = score_batches(
        model,
        [(ids[:2], mask[:2], labels[:2]), (ids[2:], mask[2:], labels[2:])],
        positions="labelled",
        progress=False,
    )
    assert parts.positions == "labelled"
    assert rel_err(parts.scores, whole.scores) < 1e-5
    assert torch.allclose(parts.loss, whole.loss, rtol=1e-6)
    path = tmp_path / "scores" / "qwen3.pt"
    whole.save(path)
    loaded = EdgeScores.load(path)
    assert torch.equal(loaded.scores, whole.scores) and torch.equal(loaded.mask, whole.mask)
    assert loaded.sources == whole.sources and loaded.positions == "labelled"
    assert [p.name for p in path.parent.iterdir()] == ["qwen3.pt"]  # no temporary left behind
    with pytest.raises(ValueError, match="position rules"):
        concat([whole, edge_scores(model, ids, mask, labels)])


def test_unknown_architecture_is_refused() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    ids = torch.randint(0, 32, (1, 6))
    with pytest.raises(UnsupportedArchitecture, match="llama, mistral, qwen2, qwen3"):
        edge_scores(gpt2, ids, torch.ones_like(ids), ids)


def test_remote_without_api_key_fails_fast(monkeypatch) -> None:
    from nnsight.schema.config import CONFIG

    from helpers.backend import NDIF

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    model = tiny_model("llama")
    ids, mask, labels = make_batch([8], 8)
    with pytest.raises(RuntimeError, match="NDIF_API_KEY"):
        edge_scores(model, ids, mask, labels, backend=NDIF())


def test_bad_inputs_name_the_fix() -> None:
    model = tiny_model("llama")
    ids, mask, labels = make_batch([SEQ, 10], SEQ)
    with pytest.raises(ValueError, match="aligned"):
        edge_scores(model, ids, mask[:, :-1], labels)
    bad = labels.clone()
    bad[1, -1] = 5  # a label on padding
    with pytest.raises(ValueError, match="padding"):
        edge_scores(model, ids, mask, bad)
    gap = mask.clone()
    gap[0, 5] = 0
    with pytest.raises(ValueError, match="contiguous"):
        edge_scores(model, ids, gap, labels.masked_fill(gap == 0, -100))
    with pytest.raises(ValueError, match="at least one labelled"):
        edge_scores(model, ids, mask, torch.full_like(labels, -100))
    with pytest.raises(ValueError, match="positions"):
        edge_scores(model, ids, mask, labels, positions="answer")
