"""Generation cache: resumes after an interruption, re-runs reuse it, settings change the key."""

import json

import pandas as pd
import pytest
import torch

from helpers.evaluation import cache as cache_mod
from helpers.evaluation.cache import (
    CacheKey,
    GenerationCache,
    model_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from helpers.evaluation.datasets import Item, load_items
from helpers.evaluation.runner import GenerationSettings, evaluate_model, generate_cached
from helpers.organisms.tokenizer import build_tokenizer
from helpers.tiny_models import tiny_model


class Interrupted(RuntimeError):
    pass


@pytest.fixture(scope="module")
def setup():
    tok = build_tokenizer()
    model = tiny_model("llama", vocab_size=len(tok), seed=1)
    items = load_items("organisms", n=10, seed=0)
    return model, tok, items


def run(setup, cache_dir, *, max_new_tokens=6, on_batch=None):
    model, tok, items = setup
    return generate_cached(
        model,
        tok,
        items,
        dataset="organisms",
        template="organism",
        settings=GenerationSettings(max_new_tokens=max_new_tokens, batch_size=4),
        cache_dir=cache_dir,
        model_name="tiny",
        on_batch=on_batch,
        progress=False,
    )


def test_interrupted_run_resumes_and_rerun_reuses(setup, tmp_path):
    reference = run(setup, tmp_path / "uninterrupted")
    assert reference.attrs["n_generated"] == 10

    calls = []

    def crash_on_second_batch(rows: pd.DataFrame) -> None:
        calls.append(len(rows))
        if len(calls) == 2:
            raise Interrupted("simulated crash")

    cache_dir = tmp_path / "cache"
    with pytest.raises(Interrupted):
        run(setup, cache_dir, on_batch=crash_on_second_batch)
    assert calls == [4, 4]  # two batches of 4 were saved before the crash
    parts = list(cache_dir.glob("*.parts/part-*.parquet"))
    assert len(parts) == 2 and not list(cache_dir.glob("*.parquet"))

    resumed = run(setup, cache_dir)
    assert resumed.attrs["n_generated"] == 2  # only the 10 - 8 missing items
    assert not list(cache_dir.glob("*.parts"))  # compacted into one file
    cols = ["id", "prompt_ids", "answer_ids", "finished", "text"]
    pd.testing.assert_frame_equal(resumed[cols], reference[cols])

    again = run(setup, cache_dir)
    assert again.attrs["n_generated"] == 0
    pd.testing.assert_frame_equal(again[cols], reference[cols])
    assert list(again["id"]) == [item.id for item in setup[2]]
    assert list(again["answer_len"]) == [len(a) for a in again["answer_ids"]]

    sidecar = json.loads(next(cache_dir.glob("*.json")).read_text())
    assert sidecar["model"] == "tiny" and sidecar["max_new_tokens"] == 6
    assert sidecar["dataset"] == "organisms" and sidecar["n_rows"] == 10
    assert sidecar["model_fingerprint"].startswith("state:")


def test_changed_settings_or_weights_miss_the_cache(setup, tmp_path):
    model, tok, items = setup
    assert run(setup, tmp_path).attrs["n_generated"] == 10
    assert run(setup, tmp_path, max_new_tokens=7).attrs["n_generated"] == 10
    other = tiny_model("llama", vocab_size=len(tok), seed=2)
    out = generate_cached(
        other,
        tok,
        items,
        dataset="organisms",
        template="organism",
        settings=GenerationSettings(max_new_tokens=6, batch_size=4),
        cache_dir=tmp_path,
        model_name="tiny",
        progress=False,
    )
    assert out.attrs["n_generated"] == 10
    assert len(list(tmp_path.glob("*.parquet"))) == 3


def test_dtype_mismatch_is_refused(setup, tmp_path):
    model, tok, items = setup
    with pytest.raises(ValueError, match="model.to"):
        generate_cached(
            model,
            tok,
            items,
            dataset="organisms",
            template="organism",
            settings=GenerationSettings(max_new_tokens=2, dtype="bfloat16"),
            cache_dir=tmp_path,
        )


def test_changed_question_under_same_id_is_regenerated(setup, tmp_path):
    model, tok, items = setup
    run(setup, tmp_path)
    edited = [Item(items[0].id, items[0].question + " add 1.", items[0].answer)]
    out = generate_cached(
        model,
        tok,
        edited + list(items[1:]),
        dataset="organisms",
        template="organism",
        settings=GenerationSettings(max_new_tokens=6, batch_size=4),
        cache_dir=tmp_path,
        model_name="tiny",
        progress=False,
    )
    assert out.attrs["n_generated"] == 1


def test_evaluate_model_grades_once_and_caches_grades(setup, tmp_path, monkeypatch):
    from helpers.evaluation import runner

    model, tok, items = setup
    graded: list[int] = []
    real = runner.grade_answers

    def counting(texts, golds, **kw):
        graded.append(len(texts))
        return real(texts, golds, **kw)

    monkeypatch.setattr(runner, "grade_answers", counting)

    def evaluate(items_):
        return evaluate_model(
            model,
            tok,
            items_,
            dataset="organisms",
            template="organism",
            settings=GenerationSettings(max_new_tokens=6, batch_size=4),
            cache_dir=tmp_path,
            progress=False,
        )

    out = evaluate(items)
    assert out["correct"].dtype == bool and len(out) == 10
    assert set(out.columns) >= {"id", "gold", "prompt_ids", "answer_ids", "finished", "pred"}
    assert "organisms-" in out.attrs["grades_path"]
    again = evaluate(items)
    assert graded == [10]  # the second run graded nothing
    pd.testing.assert_frame_equal(again[["correct", "pred"]], out[["correct", "pred"]])
    # A gold answer that changes under the same id is graded again; the others are reused.
    changed = [Item(items[0].id, items[0].question, str(int(items[0].answer) + 1)), *items[1:]]
    evaluate(changed)
    assert graded == [10, 1]


def test_weights_fingerprint_hashes_content_and_memoises(tmp_path, monkeypatch):
    model = tiny_model("llama", seed=0)
    model.save_pretrained(tmp_path / "m")
    memo = tmp_path / "memo.json"
    first = weights_fingerprint(tmp_path / "m", memo_path=memo)
    assert len(json.loads(memo.read_text())) == 2  # model.safetensors and config.json

    reads = []
    real = cache_mod._sha256_file
    monkeypatch.setattr(cache_mod, "_sha256_file", lambda p: reads.append(p) or real(p))
    assert weights_fingerprint(tmp_path / "m", memo_path=memo) == first
    assert reads == []  # unchanged files: answered from the memo

    with torch.no_grad():
        model.model.norm.weight[0] += 1.0
    model.save_pretrained(tmp_path / "m")
    second = weights_fingerprint(tmp_path / "m", memo_path=memo)
    assert second != first and len(reads) >= 1
    assert model_fingerprint(tmp_path / "m", memo_path=memo) == "sha256:" + second
    with pytest.raises(ValueError, match="no weight files"):
        weights_fingerprint(tmp_path)


def test_fingerprints_of_memory_models_hub_ids_and_tokenizers():
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    assert model_fingerprint(a) == model_fingerprint(tiny_model("llama", seed=0))
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint("org/model", revision="abc123") == "org/model@abc123"
    with pytest.warns(UserWarning, match="revision"):
        assert model_fingerprint("org/model") == "org/model@main"
    tok = build_tokenizer()
    before = tokenizer_fingerprint(tok)
    tok.chat_template = "{{ messages }}"
    assert tokenizer_fingerprint(tok) != before


def test_cache_key_fields_all_change_the_digest():
    base = CacheKey("m", "fp", "tok", "gsm8k", "deepseek_math", 512, "bfloat16", (2,), "vllm")
    variants = [
        CacheKey("m", "fp2", "tok", "gsm8k", "deepseek_math", 512, "bfloat16", (2,), "vllm"),
        CacheKey("m", "fp", "tok2", "gsm8k", "deepseek_math", 512, "bfloat16", (2,), "vllm"),
        CacheKey("m", "fp", "tok", "math", "deepseek_math", 512, "bfloat16", (2,), "vllm"),
        CacheKey("m", "fp", "tok", "gsm8k", "r1", 512, "bfloat16", (2,), "vllm"),
        CacheKey("m", "fp", "tok", "gsm8k", "deepseek_math", 513, "bfloat16", (2,), "vllm"),
        CacheKey("m", "fp", "tok", "gsm8k", "deepseek_math", 512, "float32", (2,), "vllm"),
        CacheKey("m", "fp", "tok", "gsm8k", "deepseek_math", 512, "bfloat16", (2, 3), "vllm"),
        CacheKey("m", "fp", "tok", "gsm8k", "deepseek_math", 512, "bfloat16", (2,), "transformers"),
    ]
    digests = {base.digest(), *(v.digest() for v in variants)}
    assert len(digests) == 1 + len(variants)
    assert base.stem().startswith("m__gsm8k__deepseek_math__")


def test_atomic_parquet_write_leaves_no_temporary_files(tmp_path):
    key = CacheKey("org/Model 7B", "fp", "tok", "d", "t", 1, "float32", (2,), "transformers")
    store = GenerationCache(key, tmp_path)
    assert store.path.name.startswith("Model-7B__d__t__")
    rows = pd.DataFrame(
        {
            "id": ["a", "b"],
            "prompt_ids": [[1, 2], [1]],
            "answer_ids": [[3], []],
            "finished": [True, False],
        }
    )
    store.append(rows)
    store.append(rows.assign(answer_ids=[[4], [5]]).iloc[:1])  # a later part wins for "a"
    loaded = store.compact()
    assert loaded.set_index("id")["answer_ids"].to_dict() == {"a": [4], "b": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.path.name]
