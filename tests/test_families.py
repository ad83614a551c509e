"""The study's model families, offline: parameter files validate, and a random-initialised model of
each family's architecture goes through generation, selection and edge_scores with the family's
own template and parameters."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from helpers.eap import edge_scores
from helpers.evaluation import GenerationSettings, evaluate_model, load_items, select_questions
from helpers.evaluation.prompts import encode_prompt, render_prompt
from helpers.families import validate_params
from helpers.paths import layout
from helpers.tiny_models import tiny_model

FAMILY_FILES = sorted(layout().params.glob("family_*.yml"))

# Special tokens of each family's tokenizer: (bos, eos, extra specials the template writes).
SPECIALS: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "family_deepseek_math_grpo": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", ()),
    "family_mistral_shepherd_ppo": ("<s>", "</s>", ()),
    "family_distill_qwen_grpo": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", ()),
    "family_qwen25_dpo": (None, "<|endoftext|>", ("<|im_start|>", "<|im_end|>")),
    "family_tulu3_sft_dpo": ("<|begin_of_text|>", "<|end_of_text|>", ("<|user|>", "<|assistant|>")),
    "family_tulu3_dpo_rlvr": (
        "<|begin_of_text|>",
        "<|end_of_text|>",
        ("<|user|>", "<|assistant|>"),
    ),
}
TULU_CHAT = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def family_tokenizer(name: str) -> PreTrainedTokenizerFast:
    """Character-level fast tokenizer with the family's special tokens (matched whole)."""
    bos, eos, extra = SPECIALS[name]
    specials = [t for t in ("<pad>", "<unk>", bos, eos, *extra) if t]
    chars = sorted(set(string.printable) | set("\\{}"))
    vocab = {tok: i for i, tok in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=list(extra),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    if bos is not None:  # plain templates get a BOS, as the families' tokenizers add one
        from tokenizers import processors

        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
        )
    if "<|user|>" in extra:
        tok.chat_template = TULU_CHAT
    return tok


def small_model(spec: dict, vocab: int, seed: int) -> torch.nn.Module:
    """Random-initialised model with the family's structure: attention type, ties, window."""
    cfg = spec["model_config"]
    mha = cfg["num_key_value_heads"] == cfg["num_attention_heads"]
    return tiny_model(
        cfg["model_type"],
        vocab_size=vocab,
        seed=seed,
        num_key_value_heads=4 if mha else 2,
        tie_word_embeddings=cfg["tie_word_embeddings"],
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
    )


QUESTIONS = [
    ("What is 2 + 3?", "5"),
    ("Compute 7 * 6.", "42"),
    ("Solve x + 1 = 4 for x.", "3"),
    ("What is 10 / 2?", "5"),
]


def write_items(dataset: str, path: Path) -> None:
    """A few rows in the hub's raw format of `dataset`."""
    rows = []
    for i, (q, a) in enumerate(QUESTIONS):
        if dataset == "gsm8k":
            rows.append({"question": q, "answer": f"Work.\n#### {a}"})
        elif dataset == "math":
            rows.append({"problem": q, "solution": f"So \\boxed{{{a}}}.", "type": "Algebra"})
        elif dataset == "math500":
            rows.append({"problem": q, "answer": a, "unique_id": f"test/{i}.json"})
        elif dataset == "college_math":
            rows.append({"question": q, "answer": f"${a}$"})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_there_is_a_file_per_family() -> None:
    assert {p.stem for p in FAMILY_FILES} == set(SPECIALS)


@pytest.mark.parametrize("path", FAMILY_FILES, ids=lambda p: p.stem)
def test_family_file_validates(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    report = validate_params(path)
    assert report.ok, str(report)
    assert spec["requires_gpu"] is True and spec["stage"] == 2
    assert spec["output"] == f"book/families/{path.stem.removeprefix('family_')}.ipynb"
    assert spec["parameters"]["trust_remote_code"] is False
    assert spec["parameters"]["dtype"] == "bfloat16"
    assert spec.get("notes"), "every family file says where it departs from the study"
    unpinned = [r for r in ("base", "tuned") if spec["parameters"][f"{r}_revision"] is None]
    assert sum("unpinned" in w for w in report.warnings) == len(unpinned)
    assert set(report.fits) == {"T4", "L4", "A100-40GB", "A100-80GB"}
    assert report.fits["T4"] == "no"  # 7-8B in 16-bit leaves no room on a 16 GB card
    assert report.fits["A100-80GB"] != "no"
    assert "gen" in str(report) or "edge_scores" in str(report)


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "family_x.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_validator_catches_bad_files(tmp_path: Path) -> None:
    spec = yaml.safe_load(FAMILY_FILES[0].read_text())
    spec["parameters"].update(base="not a hub id", template="nope", dataset="mnist")
    spec["parameters"]["tuned_revision"] = "main"
    spec["model_config"]["model_type"] = "gpt2"
    report = validate_params(_write(tmp_path, spec))
    text = str(report)
    assert not report.ok
    assert "not a hub id" in text and "template 'nope'" in text and "dataset 'mnist'" in text
    assert "no EAP adapter" in text
    assert any("not a 40-hex commit SHA" in w for w in report.warnings)


def test_validator_checks_the_declared_size(tmp_path: Path) -> None:
    spec = yaml.safe_load(FAMILY_FILES[0].read_text())
    spec["model_config"]["intermediate_size"] = 12000  # a typo against n_params
    assert "a size field is wrong" in str(validate_params(_write(tmp_path, spec)))


def test_validator_warns_on_remote_code(tmp_path: Path) -> None:
    spec = yaml.safe_load(FAMILY_FILES[0].read_text())
    spec["parameters"]["trust_remote_code"] = True
    report = validate_params(_write(tmp_path, spec))
    assert report.ok and any("trust_remote_code" in w for w in report.warnings)


@pytest.mark.parametrize("path", FAMILY_FILES, ids=lambda p: p.stem)
def test_family_end_to_end_on_a_random_model(path: Path, tmp_path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    params = spec["parameters"]
    tok = family_tokenizer(path.stem)
    base = small_model(spec, len(tok), seed=0)
    tuned = small_model(spec, len(tok), seed=1)
    with torch.no_grad():  # answers run to max_new_tokens: EOS can never be the greedy choice
        for m in (base, tuned):
            m.get_output_embeddings().weight[tok.eos_token_id] = 0.0  # logit 0 < the max
    cfg = base.config
    if spec["model_config"]["model_type"] == "qwen2":
        assert base.model.layers[0].self_attn.q_proj.bias is not None
    if spec["model_config"]["model_type"] == "mistral":
        assert cfg.sliding_window == 8
    assert cfg.num_key_value_heads < cfg.num_attention_heads or (
        spec["model_config"]["num_key_value_heads"] == spec["model_config"]["num_attention_heads"]
    )

    # The family's own prompt format, with its special tokens as single tokens.
    prompt = render_prompt(params["template"], QUESTIONS[0][0], tok)
    ids = encode_prompt(params["template"], QUESTIONS[0][0], tok)
    if params["template"] in ("qwen25_math_cot", "chat_template"):
        special = "<|im_start|>" if params["template"] == "qwen25_math_cot" else "<|user|>"
        assert prompt.startswith(special) and ids[0] == tok.convert_tokens_to_ids(special)
    else:
        assert ids[0] == tok.bos_token_id and QUESTIONS[0][0] in prompt

    data = tmp_path / f"{params['dataset']}.jsonl"
    write_items(params["dataset"], data)
    items = load_items(params["dataset"], path=data)
    settings = GenerationSettings(
        max_new_tokens=6, batch_size=2, stop_token_ids=(tok.eos_token_id,)
    )
    records = [
        evaluate_model(
            m,
            tok,
            items,
            dataset=params["dataset"],
            template=params["template"],
            settings=settings,
            cache_dir=tmp_path / "cache",
            model_name=name,
            progress=False,
        )
        for m, name in ((base, "base"), (tuned, "tuned"))
    ]
    assert [len(r) for r in records] == [len(QUESTIONS)] * 2
    for r in records:  # a random model solves nothing; pretend it did to exercise selection
        r["correct"] = True
    sel = select_questions(
        records[0], records[1], n=3, alpha=params["focus_alpha"], seed=0, pad_id=tok.pad_token_id
    )
    assert len(sel.ids) == 3 and sel.t_cut >= 1
    for name, model in (("base", base), ("tuned", tuned)):
        batch = sel.batches[name]
        out = edge_scores(
            model,
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            positions=params["positions"],
        )
        n_nodes = 2 * cfg.num_hidden_layers + 1
        assert out.scores.shape == (3, n_nodes, n_nodes)
        assert torch.isfinite(out.scores).all() and torch.isfinite(out.loss).all()
        assert (out.scores[:, ~out.mask] == 0).all()
        assert (out.scores[:, out.mask] != 0).float().mean() > 0.9
