"""Regenerate the whole organism set: ``python -m helpers.organisms.build``.

Three stages, each resumable per model (a finished model is skipped, a killed one restarts):
1. ``train``: pretrain, SFT from the pretrained model, then PPO, GRPO, DPO (3 seeds each) and EI
   from the saved SFT model; seed 0 of each algorithm keeps log-spaced checkpoints. Full float16
   weights go to the build folder (``data/cache/organisms``, ignored by git).
2. ``measure``: every model and checkpoint is evaluated on held-out problems from its saved weights
   (greedy pass@1 with a 95% interval, pass@k, format shares, lengths), with its mean per-token KL to
   the SFT base and the first answer token's share of the EAP loss; written to its metadata.json.
3. ``publish`` (`helpers.organisms.publish`): picks the committed checkpoints (log-spaced and
   KL-matched), stores them as float16 deltas and replaces ``data/organisms``.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers import io
from helpers.organisms import posttrain
from helpers.organisms.grading import reward
from helpers.organisms.measure import measure_model
from helpers.organisms.posttrain.checkpoints import save_model_dir
from helpers.organisms.pretrain import PretrainConfig, pretrain
from helpers.organisms.registry import (
    BASE,
    CHECKPOINTED_RUNS,
    METADATA_FILE,
    ORGANISM_NAMES,
    ROOT,
    algorithm_of,
    checkpoints_dir,
    list_checkpoints,
    load_organism,
)
from helpers.organisms.tasks import Problem, make_problems, prompt_of
from helpers.organisms.tokenizer import build_tokenizer
from helpers.paths import layout

SAVE_DTYPE = torch.float16
BUILD_DIR: Path = layout().data / "cache" / "organisms"
TRAIN_LOG = "train_log.json"


def default_posttrain_configs() -> dict[str, posttrain.PostTrainConfig]:
    """Hyper-parameters of each post-training algorithm (seed set per run)."""
    common: dict[str, Any] = dict(max_new_tokens=80, temperature=0.7)
    return {
        BASE: posttrain.PostTrainConfig(steps=200, learning_rate=3e-4, batch_size=32, **common),
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
            steps=60, learning_rate=2e-5, batch_size=32, dpo_beta=0.1, **common
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

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    posttrain: dict[str, posttrain.PostTrainConfig] = field(
        default_factory=default_posttrain_configs
    )
    n_posttrain_problems: int = 6000
    posttrain_seed: int = 1  # problems of post-training, apart from pretraining's (seed 0)
    sft_minority_share: float = (
        0.2  # SFT demos: 80% `pairs` on odd start numbers, 80% `steps` on even
    )
    n_dpo_prompts: int = 500
    dpo_samples_per_prompt: int = 8
    n_checkpoints: int = 8
    reward_fn: Callable[[list[str], list[int]], list[float]] = reward


def log_spaced_steps(steps: int, n: int) -> tuple[int, ...]:
    """About ``n`` distinct log-spaced steps in 1..steps, always including 1 and ``steps``."""
    if steps < 1 or n < 1:
        raise ValueError(f"steps and n must be >= 1, got steps={steps}, n={n}")
    return tuple(sorted({int(round(s)) for s in np.geomspace(1, steps, num=n)}))


def sft_format(problem: Problem, rng: random.Random, minority: float) -> str:
    """The SFT demonstration's format: mostly `pairs` for odd start numbers, `steps` for even ones.

    The SFT model thus prefers the less reliable compressed format on half the questions, as an
    instruct model may prefer a terse style: online RL can gain by choosing `steps` more often.
    """
    usual = "pairs" if problem.start % 2 else "steps"
    other = "steps" if usual == "pairs" else "pairs"
    return other if rng.random() < minority else usual


def posttrain_data(cfg: BuildConfig) -> tuple[list[Problem], list[str], list[int]]:
    """Training problems of post-training, their prompts and golds."""
    problems = make_problems("train", cfg.n_posttrain_problems, seed=cfg.posttrain_seed)
    return problems, [prompt_of(p) for p in problems], [p.answer for p in problems]


def save_weights(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Save a float16 copy of ``model`` plus ``tokenizer`` to ``path`` atomically."""
    half = copy.deepcopy(model)
    torch.nn.Module.to(half, SAVE_DTYPE)  # in place (transformers' annotation of .to is narrower)
    save_model_dir(half, tokenizer, path)


def is_trained(path: Path) -> bool:
    """A model folder whose weights and training log were both written."""
    return (path / "config.json").is_file() and (path / TRAIN_LOG).is_file()


def train_pretrained(out: Path, cfg: BuildConfig, progress: bool) -> None:
    """Pretrain the root of the chain and save it with its loss history."""
    tokenizer = build_tokenizer()
    result = pretrain(cfg.pretrain, tokenizer, progress=progress)
    path = out / ROOT
    save_weights(result.model, tokenizer, path)
    io.write_json(
        path / TRAIN_LOG,
        {
            "algorithm": "pretrain",
            "arguments": result.config,
            "history": result.history,
            "wall_time_s": result.wall_time_s,
            "data": {
                "n_problems": cfg.pretrain.n_problems,
                "format_shares": cfg.pretrain.format_shares,
                "n_ops": list(cfg.pretrain.n_ops),
                "document": "<bos> question + '\\n\\n' + solution <eos>",
            },
        },
    )


def _run(
    name: str,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    cfg: BuildConfig,
    pt_cfg: posttrain.PostTrainConfig,
    ckpt_dir: Path | None,
) -> tuple[posttrain.TrainLog, dict[str, Any]]:
    """Call the post-training algorithm of ``name``; returns its log and a description of its data."""
    algorithm, _ = algorithm_of(name)
    problems, prompts, golds = posttrain_data(cfg)
    data: dict[str, Any] = {
        "split": "train",
        "seed": cfg.posttrain_seed,
        "n_problems": len(problems),
    }
    if algorithm == BASE:
        rng = random.Random(pt_cfg.seed)
        formats = [sft_format(p, rng, cfg.sft_minority_share) for p in problems]
        data["demonstrations"] = (
            f"gold solutions; `pairs` for {1 - cfg.sft_minority_share:.0%} of odd start numbers, "
            f"`steps` for {1 - cfg.sft_minority_share:.0%} of even ones"
        )
        completions = [p.solutions[f] for p, f in zip(problems, formats, strict=True)]
        return posttrain.sft(model, tokenizer, prompts, completions, pt_cfg, ckpt_dir), data
    data["reward"] = "grading.reward: 1 when the written answer is right, whatever the format"
    if algorithm == "dpo":
        pairs = posttrain.make_preference_pairs(
            model,
            tokenizer,
            prompts[: cfg.n_dpo_prompts],
            golds[: cfg.n_dpo_prompts],
            cfg.reward_fn,
            k=cfg.dpo_samples_per_prompt,
            seed=pt_cfg.seed,
            max_new_tokens=pt_cfg.max_new_tokens,
            temperature=pt_cfg.temperature,
        )
        data["pairs"] = {
            "n_pairs": len(pairs),
            "n_prompts": cfg.n_dpo_prompts,
            "samples_per_prompt": cfg.dpo_samples_per_prompt,
        }
        return posttrain.dpo(model, tokenizer, pairs, pt_cfg, ckpt_dir), data
    fn = {"ei": posttrain.expert_iteration, "ppo": posttrain.ppo, "grpo": posttrain.grpo}[algorithm]
    return fn(
        model, tokenizer, prompts, golds, cfg.reward_fn, pt_cfg, checkpoint_dir=ckpt_dir
    ), data


def train_posttrained(name: str, out: Path, cfg: BuildConfig) -> None:
    """Post-train organism ``name`` from its saved parent; save it, its log and its checkpoints."""
    algorithm, seed = algorithm_of(name)
    parent = ROOT if name == BASE else BASE
    if not is_trained(out / parent):
        raise FileNotFoundError(
            f"no {parent} at {out / parent}; build it first: "
            f"python -m helpers.organisms.build --only {parent}"
        )
    model, tokenizer = load_organism(out / parent)
    pt_cfg = copy.deepcopy(cfg.posttrain[algorithm])
    pt_cfg.seed = seed
    ckpt_dir = None
    if algorithm in CHECKPOINTED_RUNS and seed == 0:
        pt_cfg.checkpoint_steps = log_spaced_steps(pt_cfg.steps, cfg.n_checkpoints)[:-1]
        ckpt_dir = checkpoints_dir(algorithm, out)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    log, data = _run(name, model, tokenizer, cfg, pt_cfg, ckpt_dir)
    save_weights(model, tokenizer, out / name)
    for step_path in list_checkpoints(algorithm, out) if ckpt_dir is not None else []:
        ckpt_model, ckpt_tok = load_organism(step_path)
        save_weights(ckpt_model, ckpt_tok, step_path)
        io.write_json(
            step_path / TRAIN_LOG, {"algorithm": algorithm, "step": int(step_path.name[5:])}
        )
    io.write_json(
        out / name / TRAIN_LOG,
        {**asdict(log), "arguments": pt_cfg.to_dict(), "data": data, "parent": parent},
    )


def train(names: list[str], out: Path, cfg: BuildConfig, progress: bool = True) -> dict[str, float]:
    """Train the named organisms in chain order, skipping finished ones; wall seconds per model."""
    timings: dict[str, float] = {}
    for name in [n for n in ORGANISM_NAMES if n in names]:
        if is_trained(out / name):
            print(f"[{name}] trained, skipped", flush=True)
            continue
        start = time.perf_counter()
        if name == ROOT:
            train_pretrained(out, cfg, progress)
        else:
            train_posttrained(name, out, cfg)
        timings[name] = time.perf_counter() - start
        print(f"[{name}] trained in {timings[name]:.0f} s", flush=True)
    return timings


def model_folders(names: list[str], out: Path) -> list[Path]:
    """The folders ``measure`` visits for ``names``: each model, then its checkpoints."""
    folders = []
    for name in [n for n in ORGANISM_NAMES if n in names]:
        folders.append(out / name)
        algorithm, seed = algorithm_of(name)
        if algorithm in CHECKPOINTED_RUNS and seed == 0:
            folders += list_checkpoints(algorithm, out)
    return folders


def measure(names: list[str], out: Path, shard: tuple[int, int] = (0, 1)) -> None:
    """Write metadata.json (evaluation, KL, first-token share) for every trained, unmeasured folder."""
    index, count = shard
    todo = [f for f in model_folders(names, out) if is_trained(f)]
    for folder in todo[index::count]:
        if (folder / METADATA_FILE).is_file():
            continue
        start = time.perf_counter()
        metadata = measure_model(folder, out)
        metadata["measure_time_s"] = time.perf_counter() - start
        io.write_json(folder / METADATA_FILE, metadata)
        ev = metadata["evaluation"]
        print(
            f"[{folder.relative_to(out)}] pass@1={ev['greedy_pass1']:.3f} kl={metadata['kl_to_base']} "
            f"shares={ev['greedy_format_shares']} ({metadata['measure_time_s']:.0f} s)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=ORGANISM_NAMES, help="repeatable")
    parser.add_argument("--stage", choices=("train", "measure", "publish", "all"), default="all")
    parser.add_argument(
        "--shard",
        type=int,
        nargs=2,
        default=(0, 1),
        metavar=("I", "N"),
        help="measure every N-th folder from I (parallel processes)",
    )
    parser.add_argument("--out", type=Path, default=BUILD_DIR, help="build folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(args.only or ORGANISM_NAMES)
    cfg = BuildConfig()
    if args.stage in ("train", "all"):
        timings = train(names, args.out, cfg)
        log_path = args.out / "build_log.json"
        previous = json.loads(log_path.read_text()) if log_path.is_file() else {}
        io.write_json(log_path, {**previous, **{k: round(v, 1) for k, v in timings.items()}})
    if args.stage in ("measure", "all"):
        measure(names, args.out, tuple(args.shard))
    if args.stage in ("publish", "all"):
        from helpers.organisms.publish import publish

        publish(args.out)


if __name__ == "__main__":
    main()
