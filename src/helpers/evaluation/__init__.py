"""Math evaluation: test sets, prompt templates, cached greedy generation, grading, selection.

Typical use (one model of a pair):

    items = load_items("gsm8k")
    records = evaluate_model(model, tokenizer, items, dataset="gsm8k", template="deepseek_math",
                             settings=GenerationSettings(max_new_tokens=4096))
    selection = select_questions(base_records, tuned_records, n=100, alpha=0.1)
    edge_scores(model, **vars(selection.batches["base"]))
"""

from helpers.evaluation.cache import (
    DEFAULT_CACHE_DIR,
    CacheKey,
    GenerationCache,
    model_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from helpers.evaluation.datasets import (
    DATASET_NAMES,
    DATASETS,
    Item,
    gsm8k_gold,
    last_boxed,
    load_items,
    math_gold,
)
from helpers.evaluation.generation import (
    Generation,
    generate_transformers,
    generate_vllm,
    stop_token_ids,
    trim_answer,
)
from helpers.evaluation.grading import Grade, grade_answers, grade_math, grader_for
from helpers.evaluation.prompts import TEMPLATES, encode_prompt, render_prompt
from helpers.evaluation.runner import GenerationSettings, evaluate_model, generate_cached
from helpers.evaluation.selection import (
    ModelBatch,
    NoQuestionsSelected,
    Selection,
    select_questions,
    truncation_batch,
)

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DEFAULT_CACHE_DIR",
    "TEMPLATES",
    "CacheKey",
    "Generation",
    "GenerationCache",
    "GenerationSettings",
    "Grade",
    "Item",
    "ModelBatch",
    "NoQuestionsSelected",
    "Selection",
    "encode_prompt",
    "evaluate_model",
    "generate_cached",
    "generate_transformers",
    "generate_vllm",
    "grade_answers",
    "grade_math",
    "grader_for",
    "gsm8k_gold",
    "last_boxed",
    "load_items",
    "math_gold",
    "model_fingerprint",
    "render_prompt",
    "select_questions",
    "stop_token_ids",
    "tokenizer_fingerprint",
    "trim_answer",
    "truncation_batch",
    "weights_fingerprint",
]
