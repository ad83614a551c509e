"""Batched greedy generation: left padding is exact, batch size does not change outputs."""

import pytest
import torch
from transformers import GenerationConfig

from helpers.evaluation.generation import (
    generate_transformers,
    left_pad,
    resolve_backend,
    stop_token_ids,
    trim_answer,
)
from helpers.evaluation.prompts import encode_prompt
from helpers.organisms.tasks import make_problems
from helpers.organisms.tokenizer import build_tokenizer
from helpers.tiny_models import tiny_model


@pytest.fixture(scope="module")
def organism():
    """A tiny random Llama over the organisms' character vocabulary, and organism prompts."""
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=14)
    prompts = [
        encode_prompt("organism", p.question, tok) for p in make_problems("test", 12, seed=1)
    ]
    assert len({len(p) for p in prompts}) > 3, "prompts should differ in length to test padding"
    return model, tok, prompts


def reference_greedy(model, prompt: list[int], n_new: int, stops: set[int]) -> list[int]:
    """Unbatched, uncached greedy decoding: full forward pass per step."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n_new):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            if nxt in stops:
                break
            seq.append(nxt)
    return seq[len(prompt) :]


def test_trim_answer_and_left_pad():
    assert trim_answer([5, 6, 2, 7, 0, 0], [2]) == ([5, 6], True)
    assert trim_answer([5, 6, 7], [2, 9]) == ([5, 6, 7], False)
    assert trim_answer([9], [2, 9]) == ([], True)
    ids, mask = left_pad([[4, 5, 6], [7]], pad_id=0)
    assert ids.tolist() == [[4, 5, 6], [0, 0, 7]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="empty"):
        left_pad([[1], []], pad_id=0)


def test_stop_ids_merge_tokenizer_and_generation_config(organism):
    model, tok, _ = organism
    model.generation_config.eos_token_id = [2, 7]
    assert stop_token_ids(tok, model.generation_config) == (2, 7)
    model.generation_config.eos_token_id = 2
    assert stop_token_ids(tok, None) == (tok.eos_token_id,)
    assert resolve_backend("transformers", model) == "transformers"
    assert resolve_backend("auto", model) == "transformers"  # an in-memory model never goes to vLLM
    with pytest.raises(ValueError, match="unknown backend"):
        resolve_backend("tgi", model)


def test_generation_matches_unbatched_reference_and_is_batch_size_invariant(organism):
    model, tok, prompts = organism
    stops = [tok.eos_token_id]
    runs = {
        bs: generate_transformers(
            model,
            prompts,
            max_new_tokens=10,
            stop_ids=stops,
            pad_id=0,
            batch_size=bs,
            progress=False,
        )
        for bs in (1, 8)
    }
    lengths = [len(g.answer_ids) for g in runs[8]]
    # Seed 14 ends answers at EOS after different numbers of steps, and runs some into the
    # limit: inside a batch, finished rows are padded while the others keep decoding.
    assert len(set(lengths)) >= 3 and 10 in lengths and min(lengths) > 0, lengths
    assert [g.answer_ids for g in runs[1]] == [g.answer_ids for g in runs[8]]
    assert [g.finished for g in runs[1]] == [g.finished for g in runs[8]]
    for prompt, gen in zip(prompts, runs[8], strict=True):
        assert gen.prompt_ids == prompt
        assert tok.eos_token_id not in gen.answer_ids and 0 not in gen.answer_ids
        assert gen.finished == (len(gen.answer_ids) < 10)
    for i in range(0, len(prompts), 3):  # the cached, padded path equals plain greedy decoding
        assert runs[8][i].answer_ids == reference_greedy(model, prompts[i], 10, set(stops))
    again = generate_transformers(
        model, prompts, max_new_tokens=10, stop_ids=stops, pad_id=0, batch_size=8, progress=False
    )
    assert again == runs[8]


def test_on_batch_sees_every_prompt_once(organism):
    model, _, prompts = organism
    seen: list[int] = []
    generate_transformers(
        model,
        prompts[:5],
        max_new_tokens=2,
        stop_ids=[2],
        pad_id=0,
        batch_size=2,
        on_batch=lambda idx, gens: seen.extend(idx),
        progress=False,
    )
    assert sorted(seen) == [0, 1, 2, 3, 4] and len(seen) == 5


@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3"])
def test_batch_size_invariance_across_families(organism, family):
    _, tok, prompts = organism
    model = tiny_model(family, vocab_size=len(tok), seed=2)
    runs = [
        generate_transformers(
            model,
            prompts,
            max_new_tokens=8,
            stop_ids=[2],
            pad_id=0,
            batch_size=bs,
            progress=False,
        )
        for bs in (1, 8)
    ]
    assert runs[0] == runs[1]


def test_checkpoint_generation_config_does_not_leak_into_greedy(organism):
    """A checkpoint's repetition penalty etc. must not alter pure greedy answers."""
    model, _, prompts = organism
    clean = generate_transformers(
        model, prompts[:4], max_new_tokens=10, stop_ids=[2], pad_id=0, progress=False
    )
    saved = model.generation_config
    model.generation_config = GenerationConfig(
        repetition_penalty=3.0, no_repeat_ngram_size=1, suppress_tokens=[5, 6, 7]
    )
    try:
        noisy = generate_transformers(
            model, prompts[:4], max_new_tokens=10, stop_ids=[2], pad_id=0, progress=False
        )
        assert model.generation_config.repetition_penalty == 3.0  # restored after the call
        # Plain `generate` with the same explicit settings does pick up the checkpoint's knobs.
        ids, mask = left_pad(prompts[:1], pad_id=0)
        greedy = GenerationConfig(
            do_sample=False, max_new_tokens=10, eos_token_id=[2], pad_token_id=0
        )
        leaked = model.generate(input_ids=ids, attention_mask=mask, generation_config=greedy)
    finally:
        model.generation_config = saved
    assert noisy == clean
    assert trim_answer(leaked[0, ids.shape[1] :].tolist(), [2])[0] != clean[0].answer_ids


def test_ndif_backend_generates_through_nnsight_remote(tmp_path, monkeypatch) -> None:
    """backend="ndif" generates through the NDIF backend's nnsight model and caches its records."""
    import helpers.remote as remote
    from helpers.backend import NDIF
    from helpers.evaluation import GenerationSettings, evaluate_model, load_items
    from helpers.organisms.tokenizer import build_tokenizer

    calls: list[int] = []

    def fake_generate_fn(self, envoy):
        assert envoy == ("envoy", "org/model")  # the hub model NDIF runs, built once per call

        def run(ids, mask, config):
            calls.append(ids.shape[0])
            return torch.cat([ids, torch.tensor([[7, 8]] * ids.shape[0])], dim=1)

        return run

    monkeypatch.setattr(remote, "remote_model", lambda repo, revision=None: ("envoy", repo))
    monkeypatch.setattr(NDIF, "generate_fn", fake_generate_fn)
    items = load_items("organisms", n=5)
    settings = GenerationSettings(max_new_tokens=4, batch_size=2, backend="ndif")
    kwargs = dict(
        dataset="organisms",
        template="organism",
        settings=settings,
        revision="abc123",
        cache_dir=tmp_path,
    )
    out = evaluate_model("org/model", build_tokenizer(), items, **kwargs)
    assert calls == [2, 2, 1]
    assert [list(a) for a in out["answer_ids"]] == [[7, 8]] * 5
    evaluate_model("org/model", build_tokenizer(), items, **kwargs)
    assert calls == [2, 2, 1]  # second run: all from the cache
