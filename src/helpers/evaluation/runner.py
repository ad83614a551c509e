"""Evaluate a model on a test set: prompts -> cached greedy generations -> grades, as a DataFrame."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from helpers.evaluation.cache import (
    DEFAULT_CACHE_DIR,
    CacheKey,
    GenerationCache,
    atomic_write_parquet,
    model_fingerprint,
    tokenizer_fingerprint,
)
from helpers.evaluation.datasets import Item
from helpers.evaluation.generation import (
    Generation,
    generate_transformers,
    generate_vllm,
    resolve_backend,
    stop_token_ids,
)
from helpers.evaluation.grading import Grade, grade_answers, grader_for
from helpers.evaluation.prompts import encode_prompt


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy generation settings. `dtype` None means the in-memory model's dtype (bfloat16 when
    vLLM or transformers loads the model by name); `stop_token_ids` None means EOS of tokenizer
    and generation config. `batch_size` is the transformers batch / vLLM chunk size."""

    max_new_tokens: int
    batch_size: int = 8
    backend: str = "auto"
    dtype: str | None = None
    stop_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")


ModelLike = PreTrainedModel | str | Path


def _load_transformers(model: str | Path, revision: str | None, dtype: str) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(
        str(model), revision=revision, dtype=getattr(torch, dtype)
    )
    return loaded.to("cuda" if torch.cuda.is_available() else "cpu").eval()


def _stop_ids(
    settings: GenerationSettings,
    tokenizer: PreTrainedTokenizerBase,
    model: ModelLike,
    revision: str | None,
) -> tuple[int, ...]:
    if settings.stop_token_ids is not None:
        return tuple(sorted(settings.stop_token_ids))
    if isinstance(model, PreTrainedModel):
        return stop_token_ids(tokenizer, model.generation_config)
    try:
        config = GenerationConfig.from_pretrained(str(model), revision=revision)
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        config = None
    return stop_token_ids(tokenizer, config)


def generate_cached(
    model: ModelLike,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Item],
    *,
    dataset: str,
    template: str,
    settings: GenerationSettings,
    cache_dir: str | Path | None = None,
    model_name: str | None = None,
    revision: str | None = None,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
    progress: bool = True,
    vllm_kwargs: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Greedy answers to `items`, generating only the ids missing from the cache.

    `model` is an in-memory transformers model, a local folder or a hub id (vLLM needs one of
    the last two; `vllm_kwargs` go to `vllm.LLM`, e.g. max_model_len). Each finished batch is
    saved before `on_batch(rows)` runs, so an interruption loses at most the batch in flight.
    A cached row whose prompt ids differ from today's prompt (the question text changed under
    the same id) is regenerated. Returns one row per item, in order: id, question, gold,
    prompt_ids, answer_ids, finished, answer_len, text; `attrs` holds `n_generated` and
    `cache_path`.
    """
    if not items:
        raise ValueError("no items to generate for")
    backend = resolve_backend(settings.backend, model)
    if backend in ("vllm", "ndif") and isinstance(model, PreTrainedModel):
        raise ValueError(
            f"the {backend} backend loads the model itself: pass a hub id or a local folder"
        )
    name = model_name or (
        str(model) if not isinstance(model, PreTrainedModel) else model.name_or_path or "model"
    )
    if isinstance(model, PreTrainedModel):
        dtype = str(model.dtype).removeprefix("torch.")
        if settings.dtype not in (None, dtype):
            raise ValueError(
                f"settings.dtype={settings.dtype!r} but the model is in {dtype}; cast the model "
                "(model.to(dtype)) or leave settings.dtype=None"
            )
    else:
        dtype = settings.dtype or "bfloat16"
    cache_root = Path(cache_dir) if cache_dir is not None else None
    memo = (cache_root or DEFAULT_CACHE_DIR) / "weights_sha256.json"
    stop_ids = _stop_ids(settings, tokenizer, model, revision)
    key = CacheKey(
        model=name,
        model_fingerprint=model_fingerprint(model, revision=revision, memo_path=memo),
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        dataset=dataset,
        template=template,
        max_new_tokens=settings.max_new_tokens,
        dtype=dtype,
        stop_token_ids=stop_ids,
        backend=backend,
    )
    cache = GenerationCache(key, cache_root)
    cache.write_sidecar()
    prompts = [encode_prompt(template, item.question, tokenizer) for item in items]
    cached = cache.load().set_index("id")
    todo = [
        i
        for i, item in enumerate(items)
        if item.id not in cached.index or list(cached.at[item.id, "prompt_ids"]) != prompts[i]
    ]

    def save(batch: list[int], gens: list[Generation]) -> None:
        rows = pd.DataFrame(
            {
                "id": [items[todo[j]].id for j in batch],
                "prompt_ids": [g.prompt_ids for g in gens],
                "answer_ids": [g.answer_ids for g in gens],
                "finished": [g.finished for g in gens],
            }
        )
        cache.append(rows)
        if on_batch is not None:
            on_batch(rows)

    if todo:
        todo_prompts = [prompts[i] for i in todo]
        if backend == "ndif":  # the model runs on NDIF; `model` is its hub id
            from helpers.remote import generate_remote, remote_model

            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
            envoy = remote_model(str(model), revision=revision)
            for start in range(0, len(todo_prompts), settings.batch_size):
                batch = list(range(start, min(start + settings.batch_size, len(todo_prompts))))
                gens = generate_remote(
                    envoy,
                    [todo_prompts[j] for j in batch],
                    max_new_tokens=settings.max_new_tokens,
                    stop_ids=stop_ids,
                    pad_id=pad_id,
                    batch_size=settings.batch_size,
                    progress=False,
                )
                save(batch, gens)
        elif backend == "vllm":
            generate_vllm(
                str(model),
                todo_prompts,
                max_new_tokens=settings.max_new_tokens,
                stop_ids=stop_ids,
                dtype=dtype,
                revision=revision,
                chunk_size=settings.batch_size,
                on_batch=save,
                progress=progress,
                **(vllm_kwargs or {}),
            )
        else:
            hf_model = (
                model
                if isinstance(model, PreTrainedModel)
                else _load_transformers(model, revision, dtype)
            )
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
            generate_transformers(
                hf_model,
                todo_prompts,
                max_new_tokens=settings.max_new_tokens,
                stop_ids=stop_ids,
                pad_id=pad_id,
                batch_size=settings.batch_size,
                on_batch=save,
                progress=progress,
            )
    rows = cache.compact().set_index("id")
    cache.write_sidecar(
        {"n_rows": len(rows), "updated": dt.datetime.now(dt.timezone.utc).isoformat()}
    )
    ids = [item.id for item in items]
    out = rows.loc[ids].reset_index()
    out.insert(1, "question", [item.question for item in items])
    out.insert(2, "gold", [item.answer for item in items])
    out["answer_len"] = [len(a) for a in out["answer_ids"]]
    out["text"] = tokenizer.batch_decode(list(out["answer_ids"]), skip_special_tokens=False)
    out.attrs["n_generated"] = len(todo)
    out.attrs["cache_path"] = str(cache.path)
    return out


def grader_version(grader: str) -> str:
    """Version tag of a grader: math-verify's package version, or a hash of the organisms' grader."""
    if grader == "math_verify":
        return "math-verify-" + importlib.metadata.version("math-verify")
    import helpers.organisms.grading as organism_grading

    source = inspect.getsource(organism_grading).encode()
    return "organisms-" + hashlib.sha256(source).hexdigest()[:12]


def grade_cached(
    records: pd.DataFrame, grader: str, path: str | Path, *, progress: bool = True
) -> list[Grade]:
    """Grades of `records` (text, gold), reusing those stored in `path` for the same
    (id, answer text, gold); only new rows are graded, and the file is rewritten atomically."""
    path = Path(path)
    keys = [
        (str(i), hashlib.sha256(t.encode()).hexdigest()[:16], str(g))
        for i, t, g in zip(records["id"], records["text"], records["gold"], strict=True)
    ]
    stored: dict[tuple[str, str, str], Grade] = {}
    if path.exists():
        for row in pd.read_parquet(path).itertuples(index=False):
            stored[(row.id, row.text_sha, row.gold)] = Grade(bool(row.correct), str(row.pred))
    todo = [i for i, key in enumerate(keys) if key not in stored]
    if todo:
        new = grade_answers(
            [records["text"].iat[i] for i in todo],
            [records["gold"].iat[i] for i in todo],
            grader=grader,
            progress=progress,
        )
        stored.update({keys[i]: grade for i, grade in zip(todo, new, strict=True)})
        # Keep this call's rows and rows of ids it did not ask about; drop stale ones.
        current, asked = set(keys), {key[0] for key in keys}
        kept = [(k, g) for k, g in stored.items() if k in current or k[0] not in asked]
        table = pd.DataFrame(
            [(*k, g.correct, g.pred) for k, g in kept],
            columns=["id", "text_sha", "gold", "correct", "pred"],
        )
        atomic_write_parquet(table, path)
    return [stored[key] for key in keys]


def evaluate_model(
    model: ModelLike,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[Item],
    *,
    dataset: str,
    template: str,
    settings: GenerationSettings,
    grader: str | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """`generate_cached` plus grading: adds `correct` and `pred` (grader defaults by dataset).

    Grades are cached next to the generations, per grader version, so re-runs grade only
    answers they have not seen.
    """
    out = generate_cached(
        model, tokenizer, items, dataset=dataset, template=template, settings=settings, **kwargs
    )
    grader = grader or grader_for(dataset)
    stem = Path(out.attrs["cache_path"]).with_suffix("")
    grades_path = stem.parent / f"{stem.name}.grades-{grader_version(grader)}.parquet"
    grades = grade_cached(out, grader, grades_path, progress=bool(kwargs.get("progress", True)))
    out["correct"] = [g.correct for g in grades]
    out["pred"] = [g.pred for g in grades]
    out.attrs["grades_path"] = str(grades_path)
    return out
