"""Planner: parameter counts, batch choice, refusals, and the estimate against measured CPU peaks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import planning
from helpers.planning import DoesNotFit, ModelShape, eap_memory, generation_memory, plan
from helpers.tiny_models import tiny_config, tiny_model

LLAMA_8B = {
    "model_type": "llama",
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("llama", {}),
        ("mistral", {}),
        ("qwen2", {}),
        ("qwen2", {"tie_word_embeddings": False}),
        ("qwen3", {}),
        ("llama", {"num_key_value_heads": 4, "intermediate_size": 200}),
    ],
)
def test_parameter_count_matches_the_model(family: str, overrides: dict) -> None:
    model = tiny_model(family, hidden_size=32, vocab_size=50, **overrides)
    shape = ModelShape.from_config(model.config)
    assert shape.n_params() == sum(p.numel() for p in model.parameters())


def test_llama_31_8b_has_its_published_size() -> None:
    assert ModelShape.from_config(LLAMA_8B).n_params() == 8_030_261_248


def test_dict_and_config_give_the_same_shape() -> None:
    config = tiny_config("qwen2", num_hidden_layers=3, hidden_size=48, vocab_size=99)
    as_dict = {
        k: getattr(config, k)
        for k in (
            "model_type",
            "num_hidden_layers",
            "hidden_size",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "tie_word_embeddings",
            "head_dim",
        )
    }
    assert ModelShape.from_config(as_dict) == ModelShape.from_config(config)


def test_missing_fields_are_named() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        ModelShape.from_config(
            {
                "model_type": "llama",
                "num_hidden_layers": 2,
                "intermediate_size": 8,
                "vocab_size": 10,
            }
        )


def test_plan_picks_the_largest_batch_that_fits() -> None:
    p = plan(
        LLAMA_8B,
        device="A100-80GB",
        eap_seq_len=600,
        eap_labelled=300,
        max_new_tokens=2048,
        max_batch=1024,
    )
    shape = ModelShape.from_config(LLAMA_8B)
    nxt = eap_memory(shape, seq_len=600, batch=p.eap_batch + 1, labelled=300)
    assert p.eap.total <= p.budget < nxt.total
    nxt_gen = generation_memory(
        shape, prompt_len=256, max_new_tokens=2048, batch=p.generation_batch + 1
    )
    assert p.generation.total <= p.budget < nxt_gen.total
    assert p.eap.parts["weights"] == shape.n_params() * 2


def test_memory_grows_with_batch_and_length() -> None:
    shape = ModelShape.from_config(LLAMA_8B)
    a = eap_memory(shape, seq_len=500, batch=1)
    assert eap_memory(shape, seq_len=500, batch=2).activations == pytest.approx(
        2 * a.activations, rel=0.02
    )
    assert eap_memory(shape, seq_len=1000, batch=1).total > a.total


def test_refusal_names_the_remedies() -> None:
    with pytest.raises(DoesNotFit) as err:
        plan(LLAMA_8B, device=20, eap_seq_len=8192, eap_labelled=8000)
    text = str(err.value)
    assert "alpha" in text and "NDIF" in text and "tokens fit" in text
    with pytest.raises(DoesNotFit, match="weights alone"):
        plan(LLAMA_8B, device="T4", eap_seq_len=300)
    with pytest.raises(DoesNotFit, match="bfloat16"):
        plan(LLAMA_8B, device=40, eap_seq_len=8192, dtype="float32")


def test_t4_is_planned_in_float16() -> None:
    small = dict(LLAMA_8B, num_hidden_layers=4, vocab_size=32000)
    p = plan(small, device="T4", eap_seq_len=300)
    assert p.dtype == "float16" and any("bfloat16" in n for n in p.notes)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="device"):
        planning.usable_bytes("TPU")
    with pytest.raises(ValueError, match="dtype"):
        eap_memory(ModelShape.from_config(LLAMA_8B), seq_len=10, dtype="int8")


# Peak memory of edge_scores on CPU, measured in a fresh process: the RSS high-water mark is reset
# (/proc/self/clear_refs) right before each call and read after it, net of the RSS before it.
# MALLOC_MMAP_THRESHOLD_ keeps large buffers on mmap so freed memory leaves the process.
_MEASURE = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from helpers.eap import edge_scores
    from helpers.tiny_models import tiny_model

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    def batch(vocab, b, t, lab):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, vocab, (b, t), generator=g)
        labels = ids.clone()
        labels[:, : t - lab] = -100
        return ids, torch.ones_like(ids), labels

    out = []
    for spec in json.loads(sys.argv[1]):
        model = tiny_model(spec["family"], **spec["sizes"])
        vocab = spec["sizes"]["vocab_size"]
        edge_scores(model, *batch(vocab, 1, 8, 4))  # warm-up: code paths and kernels loaded
        args = batch(vocab, spec["batch"], spec["seq_len"], spec["labelled"])
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        edge_scores(model, *args)
        out.append(status("VmHWM") - before)
        del model, args
    print(json.dumps(out))
    """
)

SIZES = [
    {
        "family": "qwen2",
        "sizes": {"num_hidden_layers": 2, "hidden_size": 128, "vocab_size": 512},
        "batch": 2,
        "seq_len": 256,
        "labelled": 128,
    },
    {
        "family": "llama",
        "sizes": {"num_hidden_layers": 4, "hidden_size": 256, "vocab_size": 4096},
        "batch": 4,
        "seq_len": 384,
        "labelled": 96,
    },
    {
        "family": "qwen2",
        "sizes": {
            "num_hidden_layers": 6,
            "hidden_size": 256,
            "vocab_size": 2048,
            "intermediate_size": 1024,
        },
        "batch": 4,
        "seq_len": 512,
        "labelled": 256,
    },
]


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_edge_scores_estimate_within_25_percent_of_measured_cpu_peak() -> None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps(SIZES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    for spec, peak in zip(SIZES, measured, strict=True):
        shape = ModelShape.from_config(tiny_config(spec["family"], **spec["sizes"]))
        est = eap_memory(
            shape,
            seq_len=spec["seq_len"],
            batch=spec["batch"],
            labelled=spec["labelled"],
            dtype="float32",
            device="cpu",
        )
        # weights were resident before the call, so compare what the call adds
        assert est.activations == pytest.approx(peak, rel=0.25), (spec, peak, str(est))
    assert measured[0] < measured[1] < measured[2]


def test_float32_model_on_cpu_has_no_extra_clone_term() -> None:
    shape = ModelShape.from_config(tiny_config("llama"))
    b32 = planning.eap_saved_per_token(shape, 4, kv_repeated=False)
    b16 = planning.eap_saved_per_token(shape, 2, kv_repeated=False)
    assert b16 > b32 / 2  # fp32 RMSNorm copies do not halve with the model dtype
    assert torch.tensor(b32).item() > 0


def test_max_eap_tokens_is_the_fitting_boundary() -> None:
    shape = ModelShape.from_config(LLAMA_8B)
    n = planning.max_eap_tokens(shape, device="A100-40GB")
    budget = planning.usable_bytes("A100-40GB")
    assert eap_memory(shape, seq_len=n, labelled=n - 256).total <= budget
    assert eap_memory(shape, seq_len=n + 1, labelled=n + 1 - 256).total > budget
    assert planning.max_eap_tokens(shape, device="T4") == 0
    assert planning.max_eap_tokens(shape, device="A100-80GB") > n
