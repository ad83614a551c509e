"""Test sets (gold extraction, JSONL loading, organisms split) and prompt templates."""

import json

import pytest

from helpers.evaluation.datasets import (
    DATASETS,
    Item,
    gsm8k_gold,
    last_boxed,
    load_items,
    math_gold,
)
from helpers.evaluation.prompts import TEMPLATES, encode_prompt, render_prompt
from helpers.organisms.tasks import make_problems
from helpers.organisms.tokenizer import build_tokenizer


def test_last_boxed_takes_the_last_balanced_box():
    text = "first \\boxed{1} then \\boxed{\\frac{a}{b+{c}}} done"
    assert last_boxed(text) == "\\frac{a}{b+{c}}"
    assert last_boxed("\\fbox{7} and \\boxed 5$") == "5"
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{unclosed") is None


def test_gold_extraction():
    assert gsm8k_gold("She pays 2*9=<<2*9=18>>18.\n#### 1,018") == "1018"
    solution = "So $x=\\boxed{2}$? No: $x = \\boxed{\\dfrac{3}{4}}$."
    assert math_gold(solution) == "\\dfrac{3}{4}"
    with pytest.raises(ValueError, match="####"):
        gsm8k_gold("no answer line")
    with pytest.raises(ValueError, match="boxed"):
        math_gold("no box")


def test_load_items_from_jsonl_raw_and_converted(tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    rows = [
        {"question": "1+1?", "answer": "1+1=2\n#### 2"},
        {"question": "2*3?", "answer": "#### 6"},
    ]
    gsm.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_items("gsm8k", path=gsm) == [
        Item("gsm8k/0000", "1+1?", "2"),
        Item("gsm8k/0001", "2*3?", "6"),
    ]
    math = tmp_path / "math.jsonl"
    math.write_text(
        json.dumps(
            {"problem": "p", "solution": "so \\boxed{\\pi}", "type": "Counting & Probability"}
        )
    )
    assert load_items("math", path=math) == [
        Item("math/counting_and_probability/0000", "p", "\\pi")
    ]
    college = tmp_path / "college.jsonl"
    college.write_text(json.dumps({"question": "q", "answer": "$\\frac{1}{2}$"}))
    assert load_items("college_math", path=college)[0].answer == "\\frac{1}{2}"
    converted = tmp_path / "items.jsonl"
    converted.write_text(
        json.dumps({"id": "a", "question": "q", "answer": "1"})
        + "\n"
        + json.dumps({"id": "b", "question": "r", "answer": "2"})
    )
    assert [i.id for i in load_items("math500", path=converted, n=1)] == ["a"]


def test_load_items_errors(tmp_path):
    dup = tmp_path / "dup.jsonl"
    dup.write_text((json.dumps({"id": "a", "question": "q", "answer": "1"}) + "\n") * 2)
    with pytest.raises(ValueError, match="duplicate ids"):
        load_items("math500", path=dup)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_items("aime")
    with pytest.raises(ValueError, match="drop `path`"):
        load_items("organisms", path=dup)


def test_registry_points_at_the_documented_hub_copies():
    assert DATASETS["gsm8k"].hub_id == "openai/gsm8k"
    assert DATASETS["gsm8k"].configs == ("main",)
    assert DATASETS["math"].size == 5000 and len(DATASETS["math"].configs) == 7
    assert DATASETS["math500"].hub_id == "HuggingFaceH4/MATH-500"


def test_organisms_split_matches_the_task_generator():
    items = load_items("organisms", n=12, seed=3)
    problems = make_problems("test", 12, 3)
    assert [(i.id, i.question, i.answer) for i in items] == [
        (p.id, p.question, str(p.answer)) for p in problems
    ]


def test_prompt_templates_render_the_study_formats():
    q = "What is $\\{1\\}$?"
    assert render_prompt("deepseek_math", q) == (
        "User: What is $\\{1\\}$?\nPlease reason step by step, and put your final answer "
        "within \\boxed{}.\n\nAssistant:"
    )
    assert render_prompt("r1", q) == render_prompt("deepseek_math", q)
    assert render_prompt("mistral", q) == "[INST] What is $\\{1\\}$?[/INST]"
    assert render_prompt("qwen25_math_cot", q) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is $\\{1\\}$?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_prompt("organism", "start with 3, add 4.") == "start with 3, add 4.\n\n"
    assert set(TEMPLATES) >= {"deepseek_math", "mistral", "qwen25_math_cot", "r1", "organism"}


def test_chat_template_and_encoding():
    tok = build_tokenizer()
    ids = encode_prompt("organism", "add 1.", tok)
    assert ids == [tok.bos_token_id] + tok("add 1.\n\n", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="chat_template"):
        render_prompt("chat_template", "q", tok)
    tok.chat_template = "{% for m in messages %}<bos>{{ m['content'] }}\n{% endfor %}"
    assert render_prompt("chat_template", "add 1.", tok) == "<bos>add 1.\n"
    # The chat template already holds <bos>: encoding must not add a second one.
    assert encode_prompt("chat_template", "add 1.", tok).count(tok.bos_token_id) == 1
    with pytest.raises(ValueError, match="unknown template"):
        render_prompt("alpaca", "q")
