"""Prompt templates of the study's model families and chat templates; tasks register their own.

`render_prompt` gives the prompt text; `encode_prompt` its token ids. Templates whose text already
carries the special tokens (Qwen chat format, the tokenizer's own chat template) are tokenized
without adding special tokens again; the plain templates let the tokenizer add its BOS, as the
authors' `tokenizer(prompt)` calls did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from helpers import plugins

COT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Template:
    """A prompt format: `render(question) -> text` and whether that text already holds specials."""

    name: str
    text: str | None  # format string with {q}; None for the computed templates
    has_special_tokens: bool
    description: str
    render: Callable[[str], str] | None = None  # question -> prompt, for registered formats


def register_template(template: Template) -> Template:
    """Add (or replace) a prompt template, e.g. a task's own format."""
    TEMPLATES[template.name] = template
    return template


TEMPLATES: dict[str, Template] = {
    "deepseek_math": Template(
        "deepseek_math",
        "User: {q}\n" + COT_INSTRUCTION + "\n\nAssistant:",
        False,
        "DeepSeek-Math instruct/RL evaluation prompt",
    ),
    "mistral": Template(
        "mistral", "[INST] {q}[/INST]", False, "Math-Shepherd Mistral SFT/RL instruction format"
    ),
    "qwen25_math_cot": Template(
        "qwen25_math_cot",
        "<|im_start|>system\n"
        + COT_INSTRUCTION
        + "<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
        True,
        "Qwen2.5-Math CoT chat template rendered as text",
    ),
    "r1": Template(
        "r1",
        "User: {q}\n" + COT_INSTRUCTION + "\n\nAssistant:",
        False,
        "R1-distilled models, prompted in the DeepSeek-Math style as the study's authors did",
    ),
    "chat_template": Template(
        "chat_template", None, True, "the tokenizer's own chat template, one user turn"
    ),
}


def render_prompt(
    template: str, question: str, tokenizer: PreTrainedTokenizerBase | None = None
) -> str:
    """Prompt text for `question` under `template` (`chat_template` needs the tokenizer)."""
    if template not in TEMPLATES:
        plugins.load()
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")
    spec = TEMPLATES[template]
    if spec.text is not None:
        # str.replace, not str.format: questions contain LaTeX braces.
        return spec.text.replace("{q}", question)
    if spec.render is not None:
        return spec.render(question)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template 'chat_template' needs a tokenizer that has a chat_template; "
            "pass the tokenizer or pick a fixed template"
        )
    messages = [{"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return str(text)


def encode_prompt(template: str, question: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the rendered prompt; the tokenizer's specials are added for plain templates."""
    text = render_prompt(template, question, tokenizer)
    add_special = not TEMPLATES[template].has_special_tokens
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
