"""Math evaluation: test sets, prompt templates, cached greedy generation, grading, selection.

Typical use (one model of a pair):

    items = load_items("gsm8k")
    records = evaluate_model(model, tokenizer, items, dataset="gsm8k", template="deepseek_math",
                             settings=GenerationSettings(max_new_tokens=4096))
    selection = select_questions(base_records, tuned_records, n=100, alpha=0.1)
    edge_scores(model, **vars(selection.batches["base"]))
"""

from helpers.evaluation.cache import (
    CacheKey,
    GenerationCache,
    default_cache_dir,
    model_fingerprint,
    tokenizer_fingerprint,
    weights_fingerprint,
)
from helpers.evaluation.datasets import (
    DATASETS,
    TASKS,
    Item,
    Task,
    get_task,
    gsm8k_gold,
    last_boxed,
    load_items,
    math_gold,
    register_task,
    task_names,
)
from helpers.evaluation.generation import (
    Generation,
    generate_transformers,
    generate_vllm,
    stop_token_ids,
    trim_answer,
)
from helpers.evaluation.grading import (
    Grade,
    Grader,
    grade_answers,
    grade_math,
    grader_for,
    register_grader,
)
from helpers.evaluation.prompts import TEMPLATES, Template, encode_prompt, render_prompt
from helpers.evaluation.runner import GenerationSettings, evaluate_model, generate_cached
from helpers.evaluation.selection import (
    ModelBatch,
    NoQuestionsSelected,
    Selection,
    SelectionSpec,
    select_questions,
    truncation_batch,
)

__all__ = [
    "DATASETS",
    "TASKS",
    "TEMPLATES",
    "CacheKey",
    "Generation",
    "GenerationCache",
    "GenerationSettings",
    "Grade",
    "Grader",
    "Item",
    "ModelBatch",
    "NoQuestionsSelected",
    "Selection",
    "SelectionSpec",
    "Task",
    "Template",
    "default_cache_dir",
    "encode_prompt",
    "evaluate_model",
    "generate_cached",
    "generate_transformers",
    "generate_vllm",
    "get_task",
    "grade_answers",
    "grade_math",
    "grader_for",
    "gsm8k_gold",
    "last_boxed",
    "load_items",
    "math_gold",
    "model_fingerprint",
    "register_grader",
    "register_task",
    "render_prompt",
    "select_questions",
    "stop_token_ids",
    "task_names",
    "tokenizer_fingerprint",
    "trim_answer",
    "truncation_batch",
    "weights_fingerprint",
]
