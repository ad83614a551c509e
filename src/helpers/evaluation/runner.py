"""Evaluate a model on a test set: prompts -> cached greedy generations -> grades, as a DataFrame."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from helpers.backend import Local, get_backend
from helpers.cache_repair import read_or_none
from helpers.evaluation.cache import (
    CacheKey,
    GenerationCache,
    atomic_write_parquet,
    default_cache_dir,
    model_fingerprint,
    tokenizer_fingerprint,
)
from helpers.evaluation.datasets import Item
from helpers.evaluation.generation import (
    Generation,
    generate_vllm,
    resolve_backend,
    stop_token_ids,
)
from helpers.evaluation.grading import Grade, grade_answers, grader_for, grader_version
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
        config = GenerationConfig.from_pretrained(str(model), revision=revision or "main")
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        config = None
    return stop_token_ids(tokenizer, config)


def _cache_key(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    *,
    dataset: str,
    template: str,
    settings: GenerationSettings,
    backend: str,
    name: str,
    revision: str | None,
    cache_root: Path | None,
) -> CacheKey:
    """The cache key of one model's answers: weights, tokenizer, task, template and settings."""
    if isinstance(model, PreTrainedModel):
        dtype = str(model.dtype).removeprefix("torch.")
        if settings.dtype not in (None, dtype):
            raise ValueError(
                f"settings.dtype={settings.dtype!r} but the model is in {dtype}; cast the model "
                "(model.to(dtype)) or leave settings.dtype=None"
            )
    else:
        dtype = settings.dtype or "bfloat16"
    memo = (cache_root or default_cache_dir()) / "weights_sha256.json"
    weights = model if isinstance(model, PreTrainedModel | str | Path) else name
    return CacheKey(
        model=name,
        model_fingerprint=model_fingerprint(weights, revision=revision, memo_path=memo),
        tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        dataset=dataset,
        template=template,
        max_new_tokens=settings.max_new_tokens,
        dtype=dtype,
        stop_token_ids=_stop_ids(settings, tokenizer, weights, revision),
        backend=backend,
    )


def _execution(settings: GenerationSettings, backend: Local | None) -> Local:
    """The execution backend: the one passed, else NDIF for `settings.backend == "ndif"`."""
    if backend is not None:
        return backend
    return get_backend("ndif" if settings.backend == "ndif" else "local")


def _generate(
    model: Any,
    prompts: list[list[int]],
    *,
    engine: str,
    execution: Local,
    key: CacheKey,
    settings: GenerationSettings,
    pad_id: int,
    revision: str | None,
    save: Callable[[list[int], list[Generation]], None],
    progress: bool,
    vllm_kwargs: dict[str, Any] | None,
) -> None:
    """Generate `prompts` with vLLM or through the execution backend, saving each batch."""
    stop_ids = key.stop_token_ids
    if engine == "vllm":
        generate_vllm(
            str(model),
            prompts,
            max_new_tokens=settings.max_new_tokens,
            stop_ids=stop_ids,
            dtype=key.dtype,
            revision=revision,
            chunk_size=settings.batch_size,
            on_batch=save,
            progress=progress,
            **(vllm_kwargs or {}),
        )
        return
    if isinstance(model, str | Path):  # a name: the backend loads it (on NDIF: its config only)
        model = execution.from_name(str(model), revision=revision, dtype=key.dtype)
    execution.greedy(
        model,
        prompts,
        max_new_tokens=settings.max_new_tokens,
        stop_ids=stop_ids,
        pad_id=pad_id,
        batch_size=settings.batch_size,
        on_batch=save,
        progress=progress,
        desc=f"generating ({execution.name})",
    )


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
    backend: Local | None = None,
) -> pd.DataFrame:
    """Greedy answers to `items`, generating only the ids missing from the cache.

    `model` is an in-memory transformers model, a model an execution `backend` loaded (an
    nnsight model on NDIF: pass its hub id as `model_name`), a local folder or a hub id (vLLM
    needs one of the last two; `vllm_kwargs` go to `vllm.LLM`, e.g. max_model_len). Each
    finished batch is saved before `on_batch(rows)` runs, so an interruption loses at most the
    batch in flight. A cached row whose prompt ids differ from today's prompt (the question text
    changed under the same id) is regenerated. Returns one row per item, in order: id, question,
    gold, prompt_ids, answer_ids, finished, answer_len, text; `attrs` holds `n_generated` and
    `cache_path`.
    """
    if not items:
        raise ValueError("no items to generate for")
    execution = _execution(settings, backend)
    engine = resolve_backend(settings.backend, model)
    if engine == "transformers" and execution.remote:
        engine = "ndif"
    if engine in ("vllm", "ndif") and isinstance(model, PreTrainedModel):
        raise ValueError(f"the {engine} backend loads the model itself: pass a hub id or a folder")
    name = model_name or (
        (model.name_or_path or "model") if isinstance(model, PreTrainedModel) else str(model)
    )
    cache_root = Path(cache_dir) if cache_dir is not None else None
    # what identifies the weights: the hub id on NDIF, else the (unwrapped) model or its path
    weights = name if execution.remote else getattr(model, "_module", model)
    key = _cache_key(
        weights,
        tokenizer,
        dataset=dataset,
        template=template,
        settings=settings,
        backend=engine,
        name=name,
        revision=revision,
        cache_root=cache_root,
    )
    cache = GenerationCache(key, cache_root)
    cache.write_sidecar()
    prompts = [encode_prompt(template, item.question, tokenizer) for item in items]
    todo = _missing(cache, items, prompts)

    def save(batch: list[int], gens: list[Generation]) -> None:
        rows = _rows([items[todo[j]].id for j in batch], gens)
        cache.append(rows)
        if on_batch is not None:
            on_batch(rows)

    if todo:
        pad = tokenizer.pad_token_id
        _generate(
            model,
            [prompts[i] for i in todo],
            engine=engine,
            execution=execution,
            key=key,
            settings=settings,
            pad_id=pad if pad is not None else key.stop_token_ids[0],
            revision=revision,
            save=save,
            progress=progress,
            vllm_kwargs=vllm_kwargs,
        )
    return _finish(cache, items, tokenizer, n_generated=len(todo))


def _rows(ids: list[str], gens: list[Generation]) -> pd.DataFrame:
    """Cache rows of generated answers."""
    return pd.DataFrame(
        {
            "id": ids,
            "prompt_ids": [g.prompt_ids for g in gens],
            "answer_ids": [g.answer_ids for g in gens],
            "finished": [g.finished for g in gens],
        }
    )


def _missing(cache: GenerationCache, items: Sequence[Item], prompts: list[list[int]]) -> list[int]:
    """Indices of the items the cache lacks, or holds for another prompt (the question changed)."""
    cached = cache.load().set_index("id")
    return [
        i
        for i, item in enumerate(items)
        if item.id not in cached.index or list(cached.at[item.id, "prompt_ids"]) != prompts[i]
    ]


def _finish(
    cache: GenerationCache, items: Sequence[Item], tokenizer: Any, *, n_generated: int
) -> pd.DataFrame:
    """Compact the cache and return the rows of `items`, in order, with decoded answers."""
    rows = cache.compact().set_index("id")
    cache.write_sidecar(
        {"n_rows": len(rows), "updated": dt.datetime.now(dt.timezone.utc).isoformat()}
    )
    out = rows.loc[[item.id for item in items]].reset_index()
    out.insert(1, "question", [item.question for item in items])
    out.insert(2, "gold", [item.answer for item in items])
    out["answer_len"] = [len(a) for a in out["answer_ids"]]
    out["text"] = tokenizer.batch_decode(list(out["answer_ids"]), skip_special_tokens=False)
    out.attrs["n_generated"] = n_generated
    out.attrs["cache_path"] = str(cache.path)
    return out


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
    table = read_or_none(path, pd.read_parquet) if path.exists() else None
    for row in table.itertuples(index=False) if table is not None else ():
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
        # Keep this call's rows and rows of ids it did not ask about; drop stale ones. A grade
        # that timed out is not final: it is returned but not stored, so the next run retries it.
        current, asked = set(keys), {key[0] for key in keys}
        kept = [
            (k, g)
            for k, g in stored.items()
            if (k in current or k[0] not in asked) and not g.timed_out
        ]
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
    out["timed_out"] = [g.timed_out for g in grades]
    out.attrs["grades_path"] = str(grades_path)
    return out
