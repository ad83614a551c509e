"""NDIF path: API key and hosting checks before any work, a time-limited status call, and EAP
through nnsight's local simulation of a remote request (serialise, deserialise, run)."""

from __future__ import annotations

import inspect
import sys
import textwrap
import time
import types

import pytest
import torch

from helpers import eap, remote
from helpers.backend import Local, SimulatedNDIF
from helpers.organisms.tokenizer import build_tokenizer
from helpers.remote import (
    Deployment,
    MissingAPIKey,
    NDIFUnreachable,
    NotHosted,
    check_hosted,
    parse_status,
)
from helpers.tiny_models import tiny_model

RAW_STATUS = {
    "deployments": {
        "a": {
            "repo_id": "org/hot",
            "revision": "abc",
            "deployment_level": "HOT",
            "application_state": "RUNNING",
            "model_key": "x:org/hot",
        },
        "b": {"repo_id": "org/warm", "deployment_level": "WARM", "application_state": "DEPLOYING"},
        "c": {"repo_id": "org/cold", "deployment_level": "COLD", "application_state": "RUNNING"},
    }
}


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnsight.schema.config import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)


def test_missing_key_names_the_variable(no_key: None) -> None:
    with pytest.raises(MissingAPIKey, match="NDIF_API_KEY"):
        remote.api_key()
    with pytest.raises(MissingAPIKey, match="NDIF_API_KEY"):
        remote.preflight("org/a", "org/b")


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDIF_API_KEY", "k-123")
    assert remote.api_key() == "k-123"


def test_status_keeps_deployed_models_only() -> None:
    hosted = parse_status(RAW_STATUS)
    assert set(hosted) == {"org/hot", "org/warm"}
    assert hosted["org/hot"] == [Deployment("org/hot", "abc", "HOT", "RUNNING")]
    assert hosted["org/warm"][0].revision == "main" and not hosted["org/warm"][0].running


def test_hosting_check_names_what_is_missing() -> None:
    hosted = parse_status(RAW_STATUS)
    check_hosted([("org/hot", "abc")], hosted)  # running at that revision: fine
    with pytest.raises(NotHosted) as err:
        check_hosted([("org/hot", None), ("org/warm", None), ("org/cold", None)], hosted)
    text = str(err.value)
    assert "org/hot@main [NDIF has: abc (RUNNING)]" in text
    assert "org/warm@main [NDIF has: main (DEPLOYING)]" in text
    assert "org/cold@main" in text and "Models running now: org/hot" in text


def test_preflight_checks_hosting_before_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NDIF_API_KEY", "k")
    monkeypatch.setattr(remote, "fetch_status", lambda timeout: RAW_STATUS)
    assert "org/hot" in remote.preflight(
        "org/hot", "org/hot", base_revision="abc", tuned_revision="abc"
    )
    with pytest.raises(NotHosted, match="org/other"):
        remote.preflight("org/hot", "org/other", base_revision="abc")
    with pytest.raises(ValueError, match="local model"):
        remote.preflight("organism:base", "org/hot")


def test_unreachable_service_fails_fast_and_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnsight.schema.config import CONFIG

    monkeypatch.setattr(CONFIG.API, "HOST", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(NDIFUnreachable, match="127.0.0.1:9"):
        remote.fetch_status(timeout=3.0)
    assert time.perf_counter() - start < 5.0


def test_status_call_has_a_wall_clock_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnsight import ndif

    monkeypatch.setattr(ndif, "_get", lambda *a, **k: time.sleep(5))
    start = time.perf_counter()
    with pytest.raises(NDIFUnreachable, match="within 1 s"):
        remote.fetch_status(timeout=1.0)
    assert time.perf_counter() - start < 3.0


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on one row
    labels = ids.clone()
    labels[:, :7] = -100
    return ids, mask, labels


def test_remote_local_needs_the_tokenizer() -> None:
    model = tiny_model("llama", vocab_size=53)
    with pytest.raises(ValueError, match="tokenizer"):
        eap.edge_scores(model, *_batch(53), backend=SimulatedNDIF())


def test_plain_call_passes_through_to_the_engine() -> None:
    model = tiny_model("qwen2", vocab_size=53)
    a = eap.edge_scores(model, *_batch(53), backend=Local())
    b = eap.edge_scores(model, *_batch(53))
    assert torch.equal(a.scores, b.scores)


_MULTILINE_BEFORE_BACKWARD = """
import torch

def run(envoy, ids, remote):
    kwargs = {"input_ids": ids, "remote": remote} if remote else {"input_ids": ids}
    with envoy.trace(**kwargs):
        x = envoy.model.layers[0].input_layernorm.input.clone()
        x.requires_grad_(True)
        envoy.model.layers[0].input_layernorm.input = x
        pad = torch.zeros(
            1
        )
        loss = envoy.output.logits.float().pow(2).mean() + pad.sum()
        with loss.backward():
            grad = x.grad.save()
    return grad
"""


def test_nnsight_serialised_trace_rejects_a_multiline_statement_before_backward(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nnsight 0.8.1: a trace body whose statement before `with loss.backward():` spans several
    lines runs locally but fails once serialised (remote=True or "local"): the line numbers of
    the shipped block no longer match, and `backward()` is not recognised as a block. EAP's trace
    body must keep such statements on one line."""
    import nnsight
    from nnsight.modeling.transformers import TransformersModel

    path = tmp_path / "trace_body.py"
    path.write_text(textwrap.dedent(_MULTILINE_BEFORE_BACKWARD))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__("trace_body")
    nnsight.register(module)
    envoy = TransformersModel(tiny_model("llama", vocab_size=53), tokenizer=build_tokenizer())
    ids = _batch(53)[0]
    assert module.run(envoy, ids, False).abs().sum() > 0
    with pytest.raises(TypeError, match="context manager"):
        module.run(envoy, ids, "local")
    sys.modules.pop("trace_body", None)


def _engine_trace_is_serialisable() -> bool:
    """Whether eap's trace body avoids multi-line statements and comment lines before backward."""
    source = inspect.getsource(eap._trace_scores)
    body = source[source.index("with envoy.trace") : source.index(".backward()")]
    lines = [ln.strip() for ln in body.splitlines()[1:]]
    return not any(ln.endswith(("(", "[", "{", ",")) or ln.startswith("#") for ln in lines)


def test_engine_trace_stays_serialisable() -> None:
    """nnsight's serialised (remote) execution breaks on multi-line statements and comment lines
    placed before `with loss.sum().backward()` in a trace: keep eap's trace free of them."""
    assert _engine_trace_is_serialisable()


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_remote_local_gives_the_local_scores(family: str) -> None:
    tok = build_tokenizer()
    model = tiny_model(family, vocab_size=len(tok))
    batch = _batch(len(tok))
    local = eap.edge_scores(model, *batch)
    backend = SimulatedNDIF()
    simulated = eap.edge_scores(backend.wrap(model, tok), *batch, backend=backend)
    torch.testing.assert_close(simulated.scores, local.scores, rtol=0, atol=0)
    torch.testing.assert_close(simulated.loss, local.loss, rtol=0, atol=0)
    assert simulated.scores.abs().sum() > 0


def test_remote_model_is_not_loaded_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """remote_model builds nnsight's hub wrapper with the pinned revision (constructor spied)."""
    calls = {}

    class Spy:
        def __init__(self, repo_id, **kwargs):
            calls.update(repo_id=repo_id, **kwargs)

    fake = types.SimpleNamespace(TransformersModel=Spy)
    monkeypatch.setitem(sys.modules, "nnsight.modeling.transformers", fake)
    remote.remote_model("org/model", revision="a" * 40)
    assert calls == {"repo_id": "org/model", "task": "text-generation", "revision": "a" * 40}


def test_generation_through_the_serialised_path_matches_local() -> None:
    from helpers.evaluation.generation import generate_transformers

    tok = build_tokenizer()
    model = tiny_model("mistral", vocab_size=len(tok))
    prompts = [
        tok("12+3=?\n\n")["input_ids"],
        tok("7*8\n\n")["input_ids"],
        tok("1\n\n")["input_ids"],
    ]
    stop = (tok.eos_token_id, tok.convert_tokens_to_ids("="))
    kwargs = {"max_new_tokens": 7, "stop_ids": stop, "pad_id": tok.pad_token_id, "batch_size": 2}
    local = generate_transformers(model, prompts, progress=False, **kwargs)
    backend = SimulatedNDIF()
    simulated = backend.greedy(backend.wrap(model, tok), prompts, progress=False, **kwargs)
    assert simulated == local
    assert [g.prompt_ids for g in simulated] == prompts
    assert all(len(g.answer_ids) <= 7 for g in simulated)
