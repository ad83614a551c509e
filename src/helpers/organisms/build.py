"""Regenerate the whole organism set: ``python -m helpers.organisms.build``.

Pretrains the base, then post-trains SFT, Expert Iteration, DPO, PPO and GRPO from the *saved* base
(so ``--only ppo`` reproduces ppo from the committed base alone). Every model is saved in float16 as a
transformers directory with a ``metadata.json`` whose evaluation was measured on the saved weights;
PPO and GRPO also keep log-spaced checkpoints (each evaluated) and their training history.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from helpers.organisms import posttrain
from helpers.organisms.evaluate import evaluate
from helpers.organisms.grading import reward
from helpers.organisms.posttrain.checkpoints import save_model_dir
from helpers.organisms.pretrain import PretrainConfig, draw_formats, pretrain
from helpers.organisms.registry import (
    CHECKPOINTED_RUNS,
    METADATA_FILE,
    ORGANISM_NAMES,
    ORGANISMS_DIR,
    checkpoints_dir,
    list_checkpoints,
    load_organism,
)
from helpers.organisms.tasks import Problem, make_problems, prompt_of
from helpers.organisms.tokenizer import build_tokenizer

SAVE_DTYPE = torch.float16
N_CHECK = 100  # problems of the greedy re-evaluation that tests/test_organisms_committed.py repeats
CHECK_BATCH_SIZE = 100


def default_posttrain_configs(seed: int = 0) -> dict[str, posttrain.PostTrainConfig]:
    """Hyper-parameters of each post-training run (RL ones tuned with short runs on a trial base)."""
    common = dict(max_new_tokens=64, temperature=0.7, seed=seed)
    return {
        "sft": posttrain.PostTrainConfig(steps=150, learning_rate=3e-4, batch_size=32, **common),
        "ei": posttrain.PostTrainConfig(
            steps=60,
            learning_rate=3e-5,
            batch_size=32,
            group_size=4,
            ei_rounds=2,
            ei_prompts_per_round=400,
            **common,
        ),
        "dpo": posttrain.PostTrainConfig(
            steps=60, learning_rate=1e-5, batch_size=32, dpo_beta=0.1, **common
        ),
        "ppo": posttrain.PostTrainConfig(
            steps=40,
            learning_rate=1e-5,
            batch_size=16,
            group_size=8,
            kl_coef=1e-3,
            ppo_epochs=2,
            minibatch_size=64,
            **common,
        ),
        "grpo": posttrain.PostTrainConfig(
            steps=40,
            learning_rate=3e-5,
            batch_size=16,
            group_size=8,
            kl_coef=1e-3,
            grpo_backend="native",
            **common,
        ),
    }


@dataclass
class BuildConfig:
    """Everything the build depends on; stored (per organism) in each metadata file."""

    seed: int = 0
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    posttrain: dict[str, posttrain.PostTrainConfig] = field(
        default_factory=default_posttrain_configs
    )
    n_posttrain_problems: int = 4000
    n_dpo_prompts: int = 1000  # prompts sampled (k each) to mine DPO's correct-vs-incorrect pairs
    dpo_samples_per_prompt: int = 8
    n_checkpoints: int = 8
    n_eval: int = 500
    k: int = 8
    eval_temperature: float = 0.7
    max_new_tokens: int = 64
    reward_fn: Callable[[list[str], list[int]], list[float]] = reward


def log_spaced_steps(steps: int, n: int) -> tuple[int, ...]:
    """About ``n`` distinct log-spaced steps in 1..steps, always including 1 and ``steps``."""
    if steps < 1 or n < 1:
        raise ValueError(f"steps and n must be >= 1, got steps={steps}, n={n}")
    return tuple(sorted({int(round(s)) for s in np.geomspace(1, steps, num=n)}))


def git_commit() -> str | None:
    """Commit of the repository building the set (suffix ``-dirty`` with local changes), if any."""
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("-dirty" if dirty else "")


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, indent=1, default=str)
    os.replace(tmp, path)


def save_weights(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path, dtype: torch.dtype
) -> None:
    """Save a ``dtype`` copy of ``model`` plus ``tokenizer`` to ``path`` atomically."""
    save_model_dir(copy.deepcopy(model).to(dtype), tokenizer, path)


def evaluate_saved(path: Path, cfg: BuildConfig, progress: bool = True) -> dict[str, Any]:
    """Evaluate the weights as saved at ``path`` (loaded in float32, exactly as users load them)."""
    start = time.perf_counter()
    model, tokenizer = load_organism(path)
    problems = make_problems("test", cfg.n_eval, seed=0)
    full = evaluate(
        model,
        tokenizer,
        problems,
        k=cfg.k,
        temperature=cfg.eval_temperature,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
        progress=progress,
    )
    check = evaluate(
        model,
        tokenizer,
        problems[:N_CHECK],
        k=0,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=CHECK_BATCH_SIZE,
        progress=False,
    )
    return {
        "evaluation": full.to_dict(),
        "evaluation_check": {
            "n_problems": N_CHECK,
            "batch_size": CHECK_BATCH_SIZE,
            "max_new_tokens": cfg.max_new_tokens,
            "greedy_pass1": check.greedy_pass1,
        },
        "eval_time_s": time.perf_counter() - start,
    }


def finalize(path: Path, metadata: dict[str, Any], cfg: BuildConfig, progress: bool) -> dict:
    """Evaluate the saved model at ``path`` and write its metadata.json; returns the metadata."""
    metadata = {**metadata, **evaluate_saved(path, cfg, progress)}
    metadata.update(
        dtype=str(SAVE_DTYPE).removeprefix("torch."),
        n_parameters=sum(
            p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters()
        ),
        git_commit=git_commit(),
        command="python -m helpers.organisms.build",
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        threads=torch.get_num_threads(),
    )
    write_json(path / METADATA_FILE, metadata)
    ev = metadata["evaluation"]
    print(
        f"[{path.name}] greedy pass@1={ev['greedy_pass1']:.3f} pass@{ev['k']}={ev['pass_at_k']:.3f} "
        f"maj@{ev['k']}={ev['maj_at_k']:.3f} shares={ev['greedy_format_shares']}",
        flush=True,
    )
    return metadata


def posttrain_data(cfg: BuildConfig) -> tuple[list[Problem], list[str], list[int]]:
    """Training problems of post-training (a seed apart from pretraining's), prompts and golds."""
    problems = make_problems(
        "train",
        cfg.n_posttrain_problems,
        seed=cfg.seed + 1,
        n_ops=cfg.pretrain.n_ops,
        digits=cfg.pretrain.digits,
    )
    return problems, [prompt_of(p) for p in problems], [p.answer for p in problems]


def build_base(out: Path, cfg: BuildConfig, progress: bool) -> None:
    """Pretrain the base organism and save it with its loss history."""
    tokenizer = build_tokenizer()
    result = pretrain(cfg.pretrain, tokenizer, progress=progress)
    path = out / "base"
    save_weights(result.model, tokenizer, path, SAVE_DTYPE)
    write_json(path / "train_log.json", {"algorithm": "pretrain", "history": result.history})
    finalize(
        path,
        {
            "name": "base",
            "algorithm": "pretrain",
            "arguments": result.config,
            "data": {
                "split": "train",
                "n_problems": cfg.pretrain.n_problems,
                "format_shares": cfg.pretrain.format_shares,
                "n_ops": list(cfg.pretrain.n_ops),
                "digits": cfg.pretrain.digits,
                "document": "<bos> question + '\\n\\n' + solution <eos>",
            },
            "seed": cfg.pretrain.seed,
            "wall_time_s": result.wall_time_s,
        },
        cfg,
        progress,
    )


def _run_algorithm(
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: BuildConfig,
    pt_cfg: posttrain.PostTrainConfig,
    checkpoint_dir: Path | None,
) -> tuple[posttrain.TrainLog, dict[str, Any]]:
    """Call the post-training algorithm ``name``; returns its log and a description of its data."""
    problems, prompts, golds = posttrain_data(cfg)
    data: dict[str, Any] = {
        "split": "train",
        "seed": cfg.seed + 1,
        "n_problems": len(problems),
        "reward": f"{cfg.reward_fn.__module__}.{cfg.reward_fn.__name__}: "
        + (cfg.reward_fn.__doc__ or "").strip().split("\n")[0],
    }
    if name == "sft":
        formats = draw_formats(len(problems), cfg.pretrain.format_shares, cfg.seed + 1)
        completions = [p.solutions[f] for p, f in zip(problems, formats, strict=True)]
        data["demonstrations"] = "gold solutions, formats drawn with the pretraining mixture"
        data["format_shares"] = cfg.pretrain.format_shares
        return posttrain.sft(model, tokenizer, prompts, completions, pt_cfg), data
    if name == "ei":
        return posttrain.expert_iteration(
            model, tokenizer, prompts, golds, cfg.reward_fn, pt_cfg
        ), data
    if name == "dpo":
        pairs = posttrain.make_preference_pairs(
            model,
            tokenizer,
            prompts[: cfg.n_dpo_prompts],
            golds[: cfg.n_dpo_prompts],
            cfg.reward_fn,
            k=cfg.dpo_samples_per_prompt,
            seed=cfg.seed,
            max_new_tokens=pt_cfg.max_new_tokens,
            temperature=pt_cfg.temperature,
        )
        data["pairs"] = {
            "n_pairs": len(pairs),
            "n_prompts": min(cfg.n_dpo_prompts, len(prompts)),
            "samples_per_prompt": cfg.dpo_samples_per_prompt,
            "source": "base samples at the rollout temperature: one correct (chosen) vs one incorrect",
        }
        return posttrain.dpo(model, tokenizer, pairs, pt_cfg), data
    algorithm: Callable[..., posttrain.TrainLog] = getattr(posttrain, name)
    return algorithm(
        model, tokenizer, prompts, golds, cfg.reward_fn, pt_cfg, checkpoint_dir=checkpoint_dir
    ), data


def build_posttrained(name: str, out: Path, cfg: BuildConfig, progress: bool) -> None:
    """Post-train organism ``name`` from the saved base; save it, its log and its checkpoints."""
    base_dir = out / "base"
    if not (base_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"no base at {base_dir}; build it first: python -m helpers.organisms.build --only base"
        )
    model, tokenizer = load_organism(base_dir)
    pt_cfg = cfg.posttrain[name]
    ckpt_dir = None
    if name in CHECKPOINTED_RUNS:
        pt_cfg = dataclasses.replace(
            pt_cfg, checkpoint_steps=log_spaced_steps(pt_cfg.steps, cfg.n_checkpoints)
        )
        ckpt_dir = checkpoints_dir(name, out)
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
    log, data = _run_algorithm(name, model, tokenizer, cfg, pt_cfg, ckpt_dir)
    path = out / name
    save_weights(model, tokenizer, path, SAVE_DTYPE)
    write_json(path / "train_log.json", asdict(log))
    metadata = {
        "name": name,
        "algorithm": name,
        "base": "base",
        "arguments": pt_cfg.to_dict(),
        "data": data,
        "seed": pt_cfg.seed,
        "wall_time_s": log.wall_time_s,
    }
    finalize(path, metadata, cfg, progress)
    for step_path in list_checkpoints(name, out) if ckpt_dir is not None else []:
        step = int(step_path.name.split("-", 1)[1])
        ckpt_model, ckpt_tok = load_organism(step_path)
        save_weights(ckpt_model, ckpt_tok, step_path, SAVE_DTYPE)
        finalize(
            step_path,
            {**metadata, "name": f"{name}/{step_path.name}", "step": step, "wall_time_s": None},
            cfg,
            progress,
        )


def build(
    names: list[str] | None = None,
    *,
    out: Path = ORGANISMS_DIR,
    cfg: BuildConfig | None = None,
    skip_existing: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """Build the named organisms (default: all, base first); returns wall seconds per organism."""
    cfg = cfg or BuildConfig()
    names = list(names or ORGANISM_NAMES)
    unknown = [n for n in names if n not in ORGANISM_NAMES]
    if unknown:
        raise ValueError(f"unknown organisms {unknown}; choose among {ORGANISM_NAMES}")
    timings: dict[str, float] = {}
    for name in [n for n in ORGANISM_NAMES if n in names]:
        if skip_existing and (out / name / METADATA_FILE).is_file():
            print(f"[{name}] exists, skipped", flush=True)
            continue
        start = time.perf_counter()
        if name == "base":
            build_base(out, cfg, progress)
        else:
            build_posttrained(name, out, cfg, progress)
        timings[name] = time.perf_counter() - start
        print(f"[{name}] built in {timings[name]:.0f} s", flush=True)
    return timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=ORGANISM_NAMES, help="repeatable")
    parser.add_argument("--skip-existing", action="store_true", help="keep organisms already built")
    parser.add_argument("--out", type=Path, default=ORGANISMS_DIR, help="output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = BuildConfig(
        seed=args.seed,
        pretrain=PretrainConfig(seed=args.seed),
        posttrain=default_posttrain_configs(args.seed),
    )
    start = time.perf_counter()
    timings = build(args.only, out=args.out, cfg=cfg, skip_existing=args.skip_existing)
    total = time.perf_counter() - start
    print(json.dumps({"timings_s": timings, "total_s": total}, indent=1))
    log_path = args.out / "build_log.json"
    previous = json.loads(log_path.read_text()) if log_path.is_file() else {"timings_s": {}}
    write_json(
        log_path,
        {"timings_s": {**previous["timings_s"], **timings}, "last_run_total_s": total},
    )


if __name__ == "__main__":
    main()
