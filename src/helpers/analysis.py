"""One base/tuned pair, end to end: answers, selection, EAP at each alpha, metric tables.

The pair-analysis notebook is a few calls into this module: `load_pair`, `evaluate_pair`,
`score_pair`, and `save_results`. Scores are cached on disk by content (weights, inputs,
positions), so re-running a notebook with an extra alpha only computes what is new.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers.eap import EdgeScores, concat, edge_scores
from helpers.evaluation import (
    GenerationSettings,
    ModelBatch,
    Selection,
    evaluate_model,
    load_items,
    select_questions,
)
from helpers.evaluation.cache import DEFAULT_CACHE_DIR, atomic_write_bytes, model_fingerprint
from helpers.stats import compare

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = Path(os.environ.get("RL_CIRCUITRY_RESULTS_DIR", REPO / "data" / "results"))
SCORES_DIR = REPO / "data" / "scores"
ORGANISM_PREFIX = "organism:"
CPU_GENERATION_BATCH = 16
CPU_EAP_CHUNK = 16


def _gpu_gib() -> float | None:
    """Total memory of the first CUDA device in GiB, or None without one."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**30


def auto_batches(
    model: Any,
    *,
    eap_seq_len: int,
    eap_labelled: int,
    prompt_len: int = 512,
    max_new_tokens: int = 1024,
) -> tuple[int, int]:
    """(generation batch, EAP chunk) for `model` on this machine's GPU, from the memory planner.

    On a CPU, or for a model run on NDIF, fixed defaults. Raises `planning.DoesNotFit` (with
    suggestions: smaller alpha, bf16, NDIF) when even batch 1 does not fit the GPU.
    """
    gib = _gpu_gib()
    if gib is None or not isinstance(model, torch.nn.Module):
        return CPU_GENERATION_BATCH, CPU_EAP_CHUNK
    from helpers.planning import plan

    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    p = plan(
        model.config,
        device=gib,
        eap_seq_len=eap_seq_len,
        eap_labelled=eap_labelled,
        prompt_len=prompt_len,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
    )
    return p.generation_batch, p.eap_batch


def load_model(
    ref: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
    remote: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) for `organism:<name or checkpoint path>`, a local folder or a hub id.

    Hub models load from safetensors, at the pinned `revision`, without remote code unless asked.
    `remote=True` loads nothing: it returns an nnsight model whose traces run on NDIF.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if remote:
        from helpers.remote import api_key, remote_model

        api_key()  # fail before any work when NDIF_API_KEY is missing
        tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision)
        return remote_model(ref, revision=revision), tokenizer

    torch_dtype = getattr(torch, dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if ref.startswith(ORGANISM_PREFIX):
        from helpers.organisms.registry import ORGANISMS_DIR, load_organism

        name = ref.removeprefix(ORGANISM_PREFIX)
        target = name if "/" not in name else ORGANISMS_DIR / name
        model, tokenizer = load_organism(target, dtype=torch_dtype)
    else:
        kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            ref, dtype=torch_dtype, use_safetensors=True, **kwargs
        )
    return model.to(device).eval(), tokenizer


@dataclass
class PairRecords:
    """Graded greedy answers of both models on the same items."""

    base: pd.DataFrame
    tuned: pd.DataFrame

    def summary(self) -> pd.DataFrame:
        """Accuracy, mean answer length and unfinished answers, per model."""
        rows = []
        for name, frame in (("base", self.base), ("tuned", self.tuned)):
            rows.append(
                {
                    "model": name,
                    "questions": len(frame),
                    "accuracy": float(frame["correct"].mean()),
                    "mean answer tokens": float(frame["answer_len"].mean()),
                    "unfinished": int((~frame["finished"].astype(bool)).sum()),
                }
            )
        both = self.base.set_index("id")["correct"] & self.tuned.set_index("id")["correct"]
        out = pd.DataFrame(rows).set_index("model")
        out.attrs["both_correct"] = int(both.sum())
        return out


def evaluate_pair(
    base: tuple[Any, Any],
    tuned: tuple[Any, Any],
    *,
    dataset: str,
    template: str,
    max_new_tokens: int,
    n_items: int | None = None,
    data_path: str | None = None,
    batch_size: int | None = None,
    names: tuple[str, str] = ("base", "tuned"),
    cache_dir: Path | None = None,
    remote: bool = False,
    revisions: tuple[str | None, str | None] = (None, None),
) -> PairRecords:
    """Greedy answers of both models to the dataset's items, graded, from the cache when present.

    `names` label the models in the cache (pass their references); the cache key itself holds a
    fingerprint of the weights, so two models never share an entry. With `remote=True` the
    models generate on NDIF, and `names` must be their hub ids (pinned by `revisions`).
    """
    items = load_items(dataset, path=data_path, n=n_items)
    if batch_size is None:  # the planner's batch for this GPU (a fixed default on CPU)
        batch_size, _ = auto_batches(
            base[0], eap_seq_len=1, eap_labelled=1, max_new_tokens=max_new_tokens
        )
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, batch_size=batch_size, backend="ndif" if remote else "auto"
    )
    out = []
    for (model, tokenizer), name, revision in zip((base, tuned), names, revisions, strict=True):
        out.append(
            evaluate_model(
                name if remote else model,
                tokenizer,
                items,
                dataset=dataset,
                template=template,
                settings=settings,
                model_name=name,
                revision=revision,
                cache_dir=cache_dir,
            )
        )
    return PairRecords(*out)


def _batch_key(model: Any, batch: ModelBatch, positions: str) -> str:
    h = hashlib.sha256()
    if isinstance(model, torch.nn.Module):
        identity = model_fingerprint(model, memo_path=DEFAULT_CACHE_DIR / "weights_sha256.json")
    else:  # an nnsight model on NDIF: its hub id and revision
        identity = f"ndif:{getattr(model, 'repo_id', model)}@{getattr(model, 'revision', None)}"
    h.update(identity.encode())
    for t in (batch.input_ids, batch.attention_mask, batch.labels):
        h.update(t.cpu().numpy().tobytes())
    h.update(positions.encode())
    return h.hexdigest()[:24]


def score_batch(
    model: Any,
    batch: ModelBatch,
    *,
    chunk: int = 16,
    positions: str = "all",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    remote: bool = False,
    desc: str = "EAP",
) -> EdgeScores:
    """`edge_scores` over a selection's batch in chunks, cached by (weights, inputs, positions).

    The cache lives in `cache_dir` (default `data/scores/`, git-ignored).
    """
    path = None
    if use_cache:
        path = Path(cache_dir or SCORES_DIR) / f"{_batch_key(model, batch, positions)}.pt"
        if path.is_file():
            return EdgeScores.load(path)
    device = "cpu" if remote else next(model.parameters()).device
    parts = []
    n = batch.input_ids.shape[0]
    for start in tqdm(range(0, n, chunk), desc=desc, leave=False):
        sl = slice(start, start + chunk)
        ids, mask, labels = (t[sl] for t in (batch.input_ids, batch.attention_mask, batch.labels))
        width = int(mask.sum(-1).max())  # right-padded: drop all-padding columns of this chunk
        parts.append(
            edge_scores(
                model,
                ids[:, :width].to(device),
                mask[:, :width].to(device),
                labels[:, :width].to(device),
                positions=positions,
                remote=remote,
            )
        )
    scores = concat(parts)
    if path is not None:
        scores.save(path)
    return scores


@dataclass
class AlphaResult:
    """Selection, both models' scores and the paired metric table at one alpha."""

    alpha: float
    selection: Selection
    base: EdgeScores
    tuned: EdgeScores
    table: pd.DataFrame


@dataclass
class PairAnalysis:
    """Everything a pair page shows."""

    name: str
    records: PairRecords
    alphas: dict[float, AlphaResult] = field(default_factory=dict)

    def metric_table(self) -> pd.DataFrame:
        """All alphas' metric rows, with the pair's name and alpha as columns."""
        frames = []
        for alpha, res in self.alphas.items():
            t = res.table.copy()
            t.insert(0, "alpha", alpha)
            t.insert(0, "pair", self.name)
            t["t_cut"] = res.selection.t_cut
            t["loss_base"] = float(res.base.loss.mean())
            t["loss_tuned"] = float(res.tuned.loss.mean())
            frames.append(t)
        return pd.concat(frames, ignore_index=True)


def score_pair(
    name: str,
    base: tuple[Any, Any],
    tuned: tuple[Any, Any],
    records: PairRecords,
    *,
    alphas: list[float],
    n_questions: int = 100,
    beta: float = 0.5,
    gamma: float = 1.5,
    delta: float = 0.5,
    seed: int = 42,
    reference: str = "code",
    positions: str = "all",
    chunk: int | None = None,
    n_boot: int = 2000,
    bins: int = 100,
    remote: bool = False,
) -> PairAnalysis:
    """Select questions and T_cut at each alpha, score both models with EAP, compare them.

    `chunk=None` lets the memory planner pick the EAP batch for this GPU (16 on a CPU).

    `remote=True` runs the attribution traces on NDIF (models from `load_model(..., remote=True)`).
    """
    out = PairAnalysis(name, records)
    pad_id = base[1].pad_token_id if base[1].pad_token_id is not None else 0
    for alpha in alphas:
        sel = select_questions(
            records.base,
            records.tuned,
            n=n_questions,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            delta=delta,
            seed=seed,
            reference=reference,
            pad_id=pad_id,
        )
        planned = chunk
        if planned is None:  # ask the planner only when no chunk size was given
            width = max(b.input_ids.shape[1] for b in sel.batches.values())
            _, planned = auto_batches(base[0], eap_seq_len=width, eap_labelled=sel.t_cut)
        sb, st = (
            score_batch(
                model,
                sel.batches[role],
                chunk=planned,
                positions=positions,
                remote=remote,
                desc=f"EAP {role} a={alpha}",
            )
            for (model, _), role in ((base, "base"), (tuned, "tuned"))
        )
        table = compare(sb, st, n_boot=n_boot, bins=bins, seed=seed)
        out.alphas[alpha] = AlphaResult(alpha, sel, sb, st, table)
    return out


def save_results(analysis: PairAnalysis, params: dict[str, Any], root: Path = RESULTS_DIR) -> Path:
    """Write the pair's metric table (CSV) and selection summary (JSON) for the summary page."""
    folder = root / analysis.name
    folder.mkdir(parents=True, exist_ok=True)
    table = analysis.metric_table()
    table.insert(1, "algorithm", params.get("algorithm", ""))
    atomic_write_bytes(folder / "metrics.csv", table.to_csv(index=False).encode())
    summary = {
        "pair": analysis.name,
        "parameters": params,
        "generation": analysis.records.summary().reset_index().to_dict(orient="records"),
        "selection": {
            str(a): {
                "t_cut": r.selection.t_cut,
                "refer": r.selection.refer,
                "counts": r.selection.counts,
            }
            for a, r in analysis.alphas.items()
        },
    }
    atomic_write_bytes(folder / "summary.json", json.dumps(summary, indent=2, default=str).encode())
    return folder


def load_results(root: Path = RESULTS_DIR) -> pd.DataFrame:
    """Every saved pair's metric rows, for the summary page (empty frame if none)."""
    frames = [pd.read_csv(p) for p in sorted(root.glob("*/metrics.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def selection_table(analysis: PairAnalysis) -> pd.DataFrame:
    """Per alpha: filter counts, reference length, T_cut, and each model's mean loss (nats/token).

    The loss matters for reading intensity: EAP scores are proportional to the loss gradient, so
    a model more confident of its own answer has smaller scores on the same circuit.
    """
    rows = []
    for alpha, res in analysis.alphas.items():
        rows.append(
            {
                "alpha": alpha,
                "refer": res.selection.refer,
                "T_cut": res.selection.t_cut,
                **res.selection.counts,
                "loss base": float(res.base.loss.mean()),
                "loss tuned": float(res.tuned.loss.mean()),
            }
        )
    return pd.DataFrame(rows).set_index("alpha")


def changes_along(
    base_ref: str,
    refs: dict[str, str],
    *,
    alpha: float,
    dataset: str = "organisms",
    template: str = "organism",
    max_new_tokens: int = 96,
    n_items: int | None = 300,
    n_questions: int = 64,
    n_boot: int = 500,
    gen_batch_size: int = 64,
    **select: Any,
) -> pd.DataFrame:
    """Metric table of each model in `refs` (label -> reference) against one base, stacked.

    For training dynamics: the labels are checkpoints along one run, each analysed exactly as a
    pair page analyses its tuned model.
    """
    base = load_model(base_ref)
    frames = []
    for label, ref in tqdm(refs.items(), desc="checkpoints"):
        tuned = load_model(ref)
        records = evaluate_pair(
            base,
            tuned,
            dataset=dataset,
            template=template,
            max_new_tokens=max_new_tokens,
            n_items=n_items,
            batch_size=gen_batch_size,
            names=(base_ref, ref),
        )
        result = score_pair(
            label,
            base,
            tuned,
            records,
            alphas=[alpha],
            n_questions=n_questions,
            n_boot=n_boot,
            **select,
        )
        frames.append(result.metric_table().assign(ref=ref))
    return pd.concat(frames, ignore_index=True)
