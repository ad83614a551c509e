"""The discussion chapter's data-dependent paragraphs, written from the tables and the organisms.

Each generator returns MyST Markdown whose numbers are ``{num}`` roles and whose words of direction
(raises / lowers, toward / away from a format, followed the loss or not) are chosen from the same
rows, so a re-run that changes the data changes the sentences, not only the numbers in them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from helpers.book import prose
from helpers.book.findings import FindingError, Findings, parse, select
from helpers.book.prose import num

METRICS: tuple[tuple[str, str], ...] = (
    ("intensity", "activation intensity"),
    ("information_complexity", "information complexity (histogram entropy)"),
    ("kurtosis", "kurtosis"),
    ("diversity", "inter-sample diversity"),
    ("edge_entropy", "bin-free edge entropy"),
)
CONTRASTS: tuple[tuple[str, str], ...] = (
    ("EI", "Expert Iteration"),
    ("DPO", "DPO"),
    ("SFT", "SFT (pretrained to SFT)"),
)
# Organism names of the chain's final models, in reading order, with their labels.
TUNED: tuple[tuple[str, str], ...] = (
    ("ppo", "PPO"),
    ("grpo", "GRPO"),
    ("dpo", "DPO"),
    ("ei", "EI"),
)
BASE = "sft"
READING_ORDER = ("PPO", "GRPO", "DPO", "EI")  # algorithms in the order the report reads them


def _has_rows(findings: Findings, query: str) -> bool:
    try:
        select(findings, parse(query))
    except FindingError:
        return False
    return True


def _metric_bullet(findings: Findings, metric: str, label: str) -> str:
    """One metric: online RL raw and under the verdict's control, then each contrast algorithm."""
    online = prose.present(findings, prose.ONLINE_RL)
    claimed = select(findings, parse(" ".join([metric, *online])))["claimed"].iloc[0]
    text = (
        f"- **{label}** (the study: {'up' if claimed == 'up' else 'down'} after online RL): "
        f"online RL {prose.evidence(findings, metric, online, prose.DEFAULT_CONTROL)}"
    )
    control = prose.VERDICT_CONTROL
    if prose.has_control(findings, control):
        if _has_rows(findings, prose.query_for(findings, metric, online, control)):
            text += f"; divided by |dL/dr|, {prose.evidence(findings, metric, online, control)}"
        else:
            text += "; it does not depend on a question's scale, so |dL/dr| leaves it unchanged"
    moves = []
    for algorithm, name in CONTRASTS:
        query = " ".join([metric, algorithm])
        if algorithm in findings.algorithms and _has_rows(findings, query):
            moves.append(f"{name} {prose.moves(select(findings, parse(query)))} it ({num(query)})")
    if moves:
        text += "; under the raw definition " + ", ".join(moves)
    return text + "."


def metric_changes(findings: Findings) -> str:
    """A bullet per metric of the study: how each algorithm moved it, and the verdict's control."""
    if not prose.present(findings, prose.ONLINE_RL):
        raise FindingError(f"no online-RL pair ({prose.ONLINE_RL}) in the tables")
    known = set(findings.metrics["metric"])
    return "\n".join(_metric_bullet(findings, m, label) for m, label in METRICS if m in known)


def confidence(findings: Findings) -> str:
    """How post-training changed the self-loss, and how often raw intensity moved with it."""
    algorithms = [a for a in ("DPO", "EI", "PPO", "GRPO") if a in findings.algorithms]
    query = " ".join(["intensity", *algorithms])
    rows = select(findings, parse(query))
    share = float(rows["follows_loss"].mean())
    verb = (
        "followed it"
        if share > 0.75
        else "moved with it only"
        if share > 0.25
        else "rarely followed it"
    )
    text = (
        f"Post-training changed the organisms' mean loss on their own greedy answers by "
        f"{num(query + ' col=loss_change')} for {', '.join(algorithms)}"
    )
    if "SFT" in findings.algorithms:
        text += f" and by {num('intensity SFT col=loss_change')} for SFT"
    return (
        text + f", and raw intensity {verb}: it changed in the loss's direction in "
        f"{num(query + ' col=follows_loss agg=frac')} settings."
    )


def _fact(findings: Findings, key: str) -> float:
    value = findings.facts.get(key)
    if not isinstance(value, int | float):
        raise FindingError(f"no organism fact {key!r}: publish the organisms (helpers.organisms)")
    return float(value)


def _toward(findings: Findings, names: Sequence[str], fmt: str) -> str:
    base = _fact(findings, f"organism.{BASE}.evaluation.greedy_format_shares.{fmt}")
    shares = [_fact(findings, f"organism.{n}.evaluation.greedy_format_shares.{fmt}") for n in names]
    if all(s > base + 0.05 for s in shares):
        return f"toward `{fmt}`"
    if all(s < base - 0.05 for s in shares):
        return f"away from `{fmt}`"
    return f"not consistently toward or away from `{fmt}`"


def behaviour(findings: Findings) -> str:
    """The SFT base's accuracy, formats and headroom, and where each algorithm took it."""
    ev = f"organism.{BASE}.evaluation"
    _fact(findings, f"{ev}.greedy_pass1")
    text = (
        f"The SFT base solves {num(f'{ev}.greedy_pass1')} of held-out problems greedily (95% "
        f"interval {num(f'{ev}.greedy_pass1_ci95.0')} to {num(f'{ev}.greedy_pass1_ci95.1')}) and "
        f"{num(f'{ev}.pass_at_k')} with one of 8 samples, so sampling finds right answers that "
        "greedy decoding misses. It writes "
    )
    text += " and ".join(
        f"{num(f'{ev}.greedy_format_shares.{fmt}')} of its answers in `{fmt}` (right "
        f"{num(f'{ev}.greedy_accuracy_by_format.{fmt}')} of the time)"
        for fmt in ("steps", "pairs")
    )
    tuned = [
        (n, label)
        for n, label in TUNED
        if f"organism.{n}.evaluation.greedy_pass1" in findings.facts
    ]
    text += ". Greedy accuracy after post-training (seed 0): " + ", ".join(
        f"{label} {num(f'organism.{n}.evaluation.greedy_pass1')}" for n, label in tuned
    )
    text += "; share of answers in `steps`: " + ", ".join(
        f"{label} {num(f'organism.{n}.evaluation.greedy_format_shares.steps')}"
        for n, label in tuned
    )
    online = [n for n, label in tuned if label in prose.ONLINE_RL]
    if online:
        text += f". Online RL moved the base's answers {_toward(findings, online, 'steps')}"
    return text + "."


def _causal_pairs(findings: Findings) -> list[tuple[str, str]]:
    """(fact prefix, algorithm) of every causal page in the tables, in the tables' order."""
    keys = [k for k in findings.facts if k.startswith("causal.") and k.endswith(".algorithm")]
    pairs = [(k.removesuffix(".algorithm"), str(findings.facts[k])) for k in keys]
    order = {a: i for i, a in enumerate(READING_ORDER)}
    return sorted(pairs, key=lambda p: (order.get(p[1], len(order)), p[1]))


def causal(findings: Findings) -> str:
    """What the causal pages found: the more faithful method, whether the metrics' directions
    survive the switch, and whether the edges each algorithm grew matter more than controls."""
    pairs = _causal_pairs(findings)
    if not pairs:
        return "No *Causal evidence* page has been executed yet, so nothing here is causal."
    faith = [
        f"{num(f'{key}.faithfulness.wins')} of {num(f'{key}.faithfulness.comparisons')} on "
        f"{algo}'s page"
        for key, algo in pairs
        if f"{key}.faithfulness.wins" in findings.facts
    ]
    text = (
        "Against exact single-edge ablation, EAP-IG beat EAP in "
        + ", ".join(faith)
        + " (comparisons of correlation, sign agreement, top-k overlap and error, per model and "
        "alpha)."
        if faith
        else "The faithfulness checks of the causal pages have no table yet."
    )
    methods = [(k, a) for k, a in pairs if f"{k}.methods.settings" in findings.facts]
    if methods:
        disagree = sum(int(findings.facts[f"{k}.methods.resolved_disagree"]) for k, _ in methods)
        text += " On the same questions, the pair's metric changes kept their sign under both " + (
            "methods in "
            + ", ".join(
                f"{num(f'{k}.methods.same_sign')} of {num(f'{k}.methods.settings')} settings "
                f"for {a} ({num(f'{k}.methods.resolved_disagree')} resolved in opposite "
                "directions)"
                for k, a in methods
            )
        )
        text += (
            ": the pair pages' conclusions do not hinge on the attribution method."
            if disagree == 0
            else ": where both methods resolve a change, they can disagree on its direction, so "
            "the pair pages' EAP conclusions are conclusions about EAP, the study's method, and "
            "not yet about the circuit."
        )
    grown = [(k, a) for k, a in pairs if f"{k}.grown.mass-matched.excess_drop" in findings.facts]
    if grown:
        k0 = grown[0][0]
        text += (
            f" Removing the {num(f'{k0}.grown.grown.k')} edges whose attribution rose most costs "
            "the tuned model, beyond as many edges matched in attribution mass, "
            + ", ".join(
                f"{num(f'{k}.grown.mass-matched.excess_drop fmt=pp+')} for {a} (95% interval "
                f"{num(f'{k}.grown.mass-matched.excess_low fmt=pp')} to "
                f"{num(f'{k}.grown.mass-matched.excess_high fmt=pp')})"
                for k, a in grown
            )
            + f". {_grown_contrast(findings, grown)}"
        )
    return text


def _grown_contrast(findings: Findings, grown: Sequence[tuple[str, str]]) -> str:
    """Whether online RL's grown edges matter more than DPO's, by non-overlapping intervals."""

    def bound(key: str, side: str) -> float:
        return float(findings.facts[f"{key}.grown.mass-matched.excess_{side}"])

    online = [k for k, a in grown if a in prose.ONLINE_RL]
    offline = [k for k, a in grown if a in prose.OFFLINE]
    if not online or not offline:
        return "Online RL and DPO are not both measured, so they are not compared."
    if all(bound(k, "low") > max(bound(d, "high") for d in offline) for k in online):
        return "Every online-RL interval lies above DPO's: the edges online RL grew matter more."
    if any(bound(k, "low") > 0 for k in online):
        return (
            "Some online-RL intervals exclude zero, but they overlap DPO's, so online RL and DPO "
            "are not told apart."
        )
    return "The intervals include zero or overlap: no algorithm's grown edges are shown to matter more."


GENERATORS: dict[str, Callable[[Findings], str]] = {
    "metric-changes": metric_changes,
    "confidence": confidence,
    "behaviour": behaviour,
    "causal": causal,
}
