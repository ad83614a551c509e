"""One base/tuned pair, end to end: answers, selection, EAP at each alpha, metric tables.

The pair-analysis notebook is a few calls into this module with one `PairSpec`: `load_pair`,
`evaluate_pair(**spec.evaluation_kwargs())`, `score_pair(spec, ...)` and `save_results`. Where
the models run is the spec's execution backend (`helpers.backend`). Scores are cached on disk by
content (weights, inputs, positions), so re-running with an extra alpha only computes what is new.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers import controls as C
from helpers import io, publish
from helpers.backend import LOCAL, Local
from helpers.cache_repair import read_or_none
from helpers.eap import EdgeScores, Objective, concat, edge_scores
from helpers.evaluation import (
    GenerationSettings,
    ModelBatch,
    Selection,
    evaluate_model,
    get_task,
    load_items,
    select_questions,
)
from helpers.evaluation.cache import default_cache_dir, model_fingerprint
from helpers.paths import layout
from helpers.specs import PairSpec
from helpers.windows import token_decomposition, token_profile

CPU_GENERATION_BATCH = 16
CPU_EAP_CHUNK = 16


def __getattr__(name: str) -> Path:
    """`RESULTS_DIR` and `SCORES_DIR` of the current layout (`helpers.paths`), read when asked."""
    if name == "RESULTS_DIR":
        return layout().results
    if name == "SCORES_DIR":
        return layout().scores
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    backend: Local = LOCAL,
) -> tuple[Any, Any]:
    """(model, tokenizer) for `organism:<name or checkpoint path>`, a local folder or a hub id.

    Hub models load from safetensors, at the pinned `revision`, without remote code unless asked.
    On the NDIF backend nothing is loaded here: the model is an nnsight model whose traces run
    there (the key is checked first).
    """
    return backend.load(
        ref, revision=revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code
    )


def load_pair(spec: PairSpec) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Both models of a pair on its backend; on NDIF, the key and hosting are checked first."""
    backend = spec.execution()
    if backend.name == "ndif":
        from helpers.remote import preflight

        preflight(
            spec.base,
            spec.tuned,
            base_revision=spec.base_revision,
            tuned_revision=spec.tuned_revision,
        )
    base, tuned = (
        load_model(
            ref,
            revision=revision,
            dtype=spec.dtype,
            trust_remote_code=spec.trust_remote_code,
            backend=backend,
        )
        for ref, revision in ((spec.base, spec.base_revision), (spec.tuned, spec.tuned_revision))
    )
    return base, tuned


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
    task: str,
    max_new_tokens: int,
    template: str | None = None,
    n_items: int | None = None,
    data_path: str | None = None,
    batch_size: int | None = None,
    names: tuple[str, str] = ("base", "tuned"),
    cache_dir: Path | None = None,
    backend: Local = LOCAL,
    revisions: tuple[str | None, str | None] = (None, None),
) -> PairRecords:
    """Greedy answers of both models to the task's items, graded, from the cache when present.

    `template` None uses the task's own format. `names` label the models in the cache (pass
    their references); the cache key itself holds a fingerprint of the weights, so two models
    never share an entry. On NDIF the models generate there, through the nnsight models the
    backend loaded, and `names` must be their hub ids (pinned by `revisions`).
    """
    template = template or get_task(task).template
    if template is None:
        raise ValueError(f"task {task!r} has no format of its own: pass template=")
    items = load_items(task, path=data_path, n=n_items)
    if batch_size is None:  # the planner's batch for this GPU (a fixed default on CPU)
        batch_size, _ = auto_batches(
            base[0], eap_seq_len=1, eap_labelled=1, max_new_tokens=max_new_tokens
        )
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    out = []
    for (model, tokenizer), name, revision in zip((base, tuned), names, revisions, strict=True):
        out.append(
            evaluate_model(
                model,
                tokenizer,
                items,
                dataset=task,
                template=template,
                settings=settings,
                model_name=name,
                revision=revision,
                cache_dir=cache_dir,
                backend=backend,
            )
        )
    return PairRecords(*out)


def _batch_key(
    model: Any, batch: ModelBatch, positions: str, backend: Local, objective: str = "nll"
) -> str:
    """Cache key of one batch's scores: the weights' identity, the inputs, the position rule and
    the objective (the NLL adds nothing, so its keys are those of earlier versions)."""
    h = hashlib.sha256()
    module = getattr(model, "_module", model)
    if isinstance(module, torch.nn.Module) and not backend.remote:
        memo = default_cache_dir() / "weights_sha256.json"
        identity = model_fingerprint(module, memo_path=memo)
    else:  # an nnsight model on NDIF: its hub id and revision
        identity = f"ndif:{getattr(model, 'repo_id', model)}@{getattr(model, 'revision', None)}"
    h.update(identity.encode())
    for t in (batch.input_ids, batch.attention_mask, batch.labels):
        h.update(t.cpu().numpy().tobytes())
    h.update(positions.encode())
    if objective != "nll":
        h.update(objective.encode())
    return h.hexdigest()[:24]


def score_batch(
    model: Any,
    batch: ModelBatch,
    *,
    chunk: int = CPU_EAP_CHUNK,
    positions: str = "all",
    cache_dir: Path | None = None,
    use_cache: bool = True,
    backend: Local = LOCAL,
    desc: str = "EAP",
    objective: Objective | None = None,
) -> EdgeScores:
    """`edge_scores` over a selection's batch in chunks, cached by (weights, inputs, positions,
    objective). The cache lives in `cache_dir` (default the layout's `data/scores/`, git-ignored);
    an entry from before the gradient norms were recorded is recomputed.
    """
    path = None
    if use_cache:
        folder = Path(cache_dir) if cache_dir is not None else layout().scores
        name = getattr(objective, "__name__", "custom") if objective else "nll"
        path = folder / f"{_batch_key(model, batch, positions, backend, name)}.pt"
        cached = read_or_none(path, EdgeScores.load) if path.is_file() else None
        if cached is not None and cached.grad_norm_resid is not None:
            return cached
    device = backend.input_device(model)
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
                positions=positions,  # type: ignore[arg-type]
                backend=backend,
                objective=objective,
            )
        )
    scores = concat(parts)
    if path is not None:
        scores.save(path)
    return scores


@dataclass
class AlphaResult:
    """One alpha: the selection and both models' raw scores (first seed), every control's table."""

    alpha: float
    selection: Selection
    base: EdgeScores
    tuned: EdgeScores
    controls: pd.DataFrame  # one row per (control, metric), seeds pooled
    t_cuts: list[int] = field(default_factory=list)  # T_cut of each tuned seed
    losses: tuple[float, float] = (float("nan"), float("nan"))  # mean raw loss, seeds pooled
    tokens: pd.DataFrame | None = None  # per-answer-token profile of each model (focus alpha)

    @property
    def table(self) -> pd.DataFrame:
        """The raw (study's) comparison: one row per metric."""
        raw = self.controls[self.controls["control"] == "raw"]
        return raw.drop(columns="control").reset_index(drop=True)


@dataclass
class PairAnalysis:
    """Everything a pair page shows."""

    name: str
    records: PairRecords
    alphas: dict[float, AlphaResult] = field(default_factory=dict)

    def metric_table(self) -> pd.DataFrame:
        """Every alpha's rows, one per (control, metric), with pair, alpha, T_cut and losses."""
        frames = []
        for alpha, res in self.alphas.items():
            t = res.controls.copy()
            t.insert(0, "alpha", alpha)
            t.insert(0, "pair", self.name)
            t["t_cut"] = res.selection.t_cut
            t["t_cuts"] = ",".join(str(c) for c in res.t_cuts or [res.selection.t_cut])
            t["loss_base"], t["loss_tuned"] = res.losses
            frames.append(t)
        return pd.concat(frames, ignore_index=True)


def _scorer(spec: PairSpec, backend: Local, chunk: int, alpha: float) -> C.Scorer:
    """The controls' way to score a batch: `score_batch`, cached, on the pair's backend."""

    def score(model: Any, batch: ModelBatch, objective: Objective | None, label: str) -> EdgeScores:
        return score_batch(
            model,
            batch,
            chunk=chunk,
            positions=spec.positions,
            backend=backend,
            desc=f"EAP {label} a={alpha}",
            objective=objective,
        )

    return score


def score_pair(
    spec: PairSpec,
    base: tuple[Any, Any],
    tuned: tuple[Any, Any],
    records: PairRecords,
    seeds: list[tuple[tuple[Any, Any], PairRecords]] | None = None,
) -> PairAnalysis:
    """Select questions and T_cut at each of the spec's alphas, score both models with EAP under
    every control of the spec on its backend, and compare them, pooling the tuned seeds.

    `seeds` are the further tuned seeds (model, their records against the base), as
    `load_seeds` gives them; each seed has its own selection. `spec.eap_chunk=None` lets the
    memory planner pick the EAP batch for this GPU (16 on a CPU).
    """
    out = PairAnalysis(spec.pair, records)
    pad_id = base[1].pad_token_id if base[1].pad_token_id is not None else 0
    backend = spec.execution()
    controls = spec.control_names()
    runs = [(tuned, records), *(seeds or [])]
    for alpha in spec.alphas:
        per_seed, selections = [], []
        for (model, _), recs in runs:
            sel = select_questions(
                recs.base, recs.tuned, alpha=alpha, pad_id=pad_id, **spec.selection.kwargs()
            )
            chunk = spec.eap_chunk or _planned_chunk(base[0], sel)
            score = _scorer(spec, backend, chunk, alpha)
            per_seed.append(C.control_scores(score, base[0], model, sel, controls))
            selections.append(sel)
        table = C.control_table(
            per_seed, controls, n_boot=spec.n_boot, bins=spec.bins, seed=spec.selection.seed
        )
        raw_b, raw_t = per_seed[0]["raw"]
        b_loss, t_loss = (
            float(torch.cat([s["raw"][i].loss for s in per_seed]).mean()) for i in (0, 1)
        )
        losses = (b_loss, t_loss)
        out.alphas[alpha] = AlphaResult(
            alpha, selections[0], raw_b, raw_t, table, [s.t_cut for s in selections], losses
        )
    focus = out.alphas.get(spec.focus_alpha)
    if spec.token_profile > 0 and focus is not None and backend.name == "local":
        focus.tokens = token_table(spec, base[0], tuned[0], focus.selection)
    return out


def _planned_chunk(model: Any, sel: Selection) -> int:
    """The memory planner's EAP batch for this selection's widest batch."""
    width = max(b.input_ids.shape[1] for b in sel.batches.values())
    _, chunk = auto_batches(model, eap_seq_len=width, eap_labelled=sel.t_cut)
    return chunk


def token_table(spec: PairSpec, base: Any, tuned: Any, sel: Selection) -> pd.DataFrame:
    """Per answer token of each model's own answer: loss, intensity and share of attribution,
    on the first `spec.token_profile` selected questions (T_cut rows of EAP per question)."""
    frames = []
    n = spec.token_profile
    for role, model in (("base", base), ("tuned", tuned)):
        batch = sel.batches[role]
        device = spec.execution().input_device(model)
        tokens = token_decomposition(
            model,
            *(t[:n].to(device) for t in (batch.input_ids, batch.attention_mask, batch.labels)),
            positions=spec.positions,  # type: ignore[arg-type]
            chunk=spec.eap_chunk or 64,
            progress=True,
        )
        frames.append(token_profile(tokens).assign(model=role))
    return pd.concat(frames).reset_index().set_index(["model", "token"])


def load_seeds(spec: PairSpec, base: tuple[Any, Any]) -> list[tuple[tuple[Any, Any], PairRecords]]:
    """The spec's further tuned seeds, loaded, each with its graded answers against the base."""
    out = []
    backend = spec.execution()
    for ref in spec.tuned_seeds:
        model = load_model(
            ref, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code, backend=backend
        )
        kwargs = {
            **spec.evaluation_kwargs(),
            "names": (spec.base, ref),
            "revisions": (spec.base_revision, None),
        }
        out.append((model, evaluate_pair(base, model, **kwargs)))
    return out


def save_results(analysis: PairAnalysis, params: dict[str, Any], root: Path | None = None) -> Path:
    """Write the pair's metric table (CSV) and selection summary (JSON) for the summary page.

    Into `root/<pair>` when given; otherwise where `publish.target` says: the runner's staging
    folder (published when the page completes) or, for any other execution, data/scratch. The
    runner adds run.json (parameter file, parameters, commit); nothing here varies between runs.
    """
    folder = root / analysis.name if root is not None else publish.target(analysis.name).folder
    table = analysis.metric_table()
    table.insert(1, "algorithm", params.get("algorithm", ""))
    publish.write_csv(table, folder / "metrics.csv")
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
    io.write_json(folder / "summary.json", summary)
    return folder


def load_results(root: Path | None = None, *, check: bool = True) -> pd.DataFrame:
    """Every saved pair's metric rows, for the summary page (empty frame if none).

    With `check` (the default), each folder's run.json must record the parameters its parameter
    file holds now, else `publish.ResultsMismatch` names both. Tables written before the controls
    existed hold the raw definition only: their rows get ``control = "raw"``.
    """
    root = root if root is not None else layout().results
    paths = sorted(root.glob("*/metrics.csv"))
    for path in paths if check else ():
        publish.check_published(path.parent, layout().params)
    frames = [pd.read_csv(p) for p in paths]
    frames = [f if "control" in f.columns else f.assign(control="raw") for f in frames]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_table(name: str, root: Path | None = None, *, check: bool = True) -> pd.DataFrame:
    """Every results folder's table `name` (e.g. "grown.csv") stacked, with a ``pair`` column
    when the table lacks one (empty frame if no folder has it); `check` as in `load_results`."""
    root = root if root is not None else layout().results
    paths = sorted(root.glob(f"*/{name}"))
    for path in paths if check else ():
        publish.check_published(path.parent, layout().params)
    frames = [pd.read_csv(p) for p in paths]
    frames = [
        f if "pair" in f.columns else f.assign(pair=p.parent.name)
        for f, p in zip(frames, paths, strict=True)
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def selection_table(analysis: PairAnalysis) -> pd.DataFrame:
    """Per alpha: filter counts, reference length, T_cut, and each model's mean loss (nats/token).

    The loss matters for reading intensity: EAP scores are proportional to the loss gradient, so
    a model more confident of its own answer has smaller scores on the same circuit.
    """
    rows = []
    for alpha, res in analysis.alphas.items():
        row: dict[str, Any] = {
            "alpha": alpha,
            "refer": res.selection.refer,
            "T_cut": res.selection.t_cut,
            **res.selection.counts,
            "loss base": float(res.base.loss.mean()),
            "loss tuned": float(res.tuned.loss.mean()),
        }
        if len(res.t_cuts) > 1:  # pooled seeds: each has its own selection and T_cut
            row["T_cut per seed"] = ",".join(map(str, res.t_cuts))
            row["loss base"], row["loss tuned"] = res.losses
        rows.append(row)
    return pd.DataFrame(rows).set_index("alpha")


def checkpoint_changes(
    checkpoints: pd.DataFrame, *, base_ref: str = "organism:sft", **kwargs: Any
) -> pd.DataFrame:
    """`changes_along` for every checkpoint after step 0 of each run in `checkpoints` (columns
    run, step, ref, as `reporting.checkpoint_table` gives), labelled with run and step."""
    frames = []
    for run, rows in checkpoints[checkpoints["step"] > 0].groupby("run", sort=False):
        refs = {f"{run}/step {s}": ref for s, ref in zip(rows["step"], rows["ref"], strict=True)}
        table = changes_along(base_ref, refs, **kwargs)
        steps = dict(zip(refs.values(), rows["step"], strict=True))
        frames.append(table.assign(run=run, step=table["ref"].map(steps).astype(int)))
    return pd.concat(frames, ignore_index=True)


def model_records(
    model: Any,
    tokenizer: Any,
    *,
    task: str,
    max_new_tokens: int,
    n_items: int | None = None,
    name: str | None = None,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Graded greedy answers of one model to a task, at the planner's batch size for this GPU."""
    if batch_size is None:
        batch_size, _ = auto_batches(
            model, eap_seq_len=1, eap_labelled=1, max_new_tokens=max_new_tokens
        )
    template = get_task(task).template
    if template is None:
        raise ValueError(f"task {task!r} has no format of its own; use evaluate_model(template=)")
    return evaluate_model(
        model,
        tokenizer,
        load_items(task, n=n_items),
        dataset=task,
        template=template,
        settings=GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size),
        model_name=name,
    )


def changes_along(
    base_ref: str,
    refs: dict[str, str],
    *,
    alpha: float,
    task: str = "organisms",
    max_new_tokens: int = 96,
    n_items: int | None = 300,
    n_questions: int = 64,
    n_boot: int = 500,
    gen_batch_size: int = 64,
    **select: Any,
) -> pd.DataFrame:
    """Metric table of each model in `refs` (label -> reference) against one base, stacked.

    For training dynamics: the labels are checkpoints along one run, each analysed exactly as a
    pair page analyses its tuned model (`select`: further selection parameters, e.g. beta).
    """
    base = load_model(base_ref)
    frames = []
    for label, ref in tqdm(refs.items(), desc="checkpoints"):
        spec = PairSpec.from_params(
            {
                "pair": label,
                "base": base_ref,
                "tuned": ref,
                "task": task,
                "max_new_tokens": max_new_tokens,
                "n_items": n_items,
                "gen_batch_size": gen_batch_size,
                "alphas": [alpha],
                "n_questions": n_questions,
                "n_boot": n_boot,
                "controls": ["raw"],  # the dynamics page follows the study's definition
                "token_profile": 0,
                **select,
            }
        )
        tuned = load_model(ref)
        records = evaluate_pair(base, tuned, **spec.evaluation_kwargs())
        result = score_pair(spec, base, tuned, records)
        frames.append(result.metric_table().assign(ref=ref))
    return pd.concat(frames, ignore_index=True)
