"""Every prose number comes from the result tables: no typed numbers, README in step, prose follows data.

The prose of the landing page, the discussion, the summary template and the README findings is
checked for numbers no ``{num}`` role, code span or math accounts for; every role must resolve on
today's tables; and on synthetic tables a change of one number must change the generated text.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from helpers import verdict
from helpers.book import discussion, prose
from helpers.book import findings as F
from helpers.book.typed import typed_numbers

REPO = Path(__file__).resolve().parents[1]
PROSE_PAGES = ("book/intro.md", "book/discussion.md")
PROSE_TEMPLATES = ("notebooks/summary.ipynb",)
MINUS = F.MINUS


def _markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return path.read_text(encoding="utf-8")


def synthetic_findings(change: dict[tuple[str, str, float], float] | None = None) -> F.Findings:
    """Tables for SFT, DPO, PPO and GRPO at two alphas; ``change`` overrides rel_change cells."""
    rows = []
    claims = {"intensity": "up", "diversity": "up", "kurtosis": "down"}
    rng = np.random.default_rng(0)
    for algo, alpha, (metric, claimed) in itertools.product(
        ("SFT", "DPO", "PPO", "GRPO"), (0.1, 0.5), claims.items()
    ):
        rel = (change or {}).get((algo, metric, alpha), float(rng.uniform(-0.5, 0.5)))
        base, loss_base = 2.0, 0.5
        rows.append(
            {
                "pair": f"organism_{algo.lower()}",
                "algorithm": algo,
                "alpha": alpha,
                "metric": metric,
                "base": base,
                "tuned": base * (1 + rel),
                "rel_change": rel,
                "rel_ci_low": rel - 0.05,
                "rel_ci_high": rel + 0.05,
                "ci_excludes_zero": abs(rel) > 0.05,
                "claimed": claimed,
                "matches_claim": (rel > 0) == (claimed == "up"),
                "loss_base": loss_base,
                "loss_tuned": loss_base * (0.4 if algo in ("PPO", "GRPO") else 0.9),
            }
        )
    metrics = F.derive(pd.DataFrame(rows))
    facts = {"organism.base.evaluation.greedy_pass1": 0.592, "organism.base.n_parameters": 866688}
    facts.update(F._table_facts(metrics))
    return F.Findings(metrics=metrics, facts=facts)


# --- the engine: queries, formats, errors -------------------------------------------------------


def test_queries_read_the_rows_they_name() -> None:
    f = synthetic_findings({("GRPO", "intensity", 0.5): -0.8321, ("PPO", "intensity", 0.5): -0.75})
    assert f.value("intensity GRPO alpha=0.5") == f"{MINUS}83%"
    assert f.value("intensity PPO GRPO alpha=0.5") == f"{MINUS}83% to {MINUS}75%"
    assert f.value("intensity GRPO alpha=0.5 agg=ci") == f"{MINUS}83% [{MINUS}88%, {MINUS}78%]"
    assert f.value("intensity PPO GRPO alpha=0.5 col=contradicts agg=frac") == "2 of 2"
    assert f.value("intensity GRPO alpha=0.5 col=base") == "2"
    assert f.value("intensity GRPO col=loss_change alpha=0.5") == f"{MINUS}60%"
    assert f.value("organism.base.evaluation.greedy_pass1") == "59%"
    assert f.value("organism.base.n_parameters") == "866688"
    assert f.value("table.n_pairs") == "4" and f.value("table.alphas") == "0.1, 0.5"


@pytest.mark.parametrize(
    ("value", "fmt", "text"),
    [
        (-0.8328, "pct+", f"{MINUS}83%"),
        (0.0604, "pct+", "+6.0%"),
        (0.0064, "pct+", "+0.64%"),
        (0.592, "pct", "59%"),
        (1.234567, "g", "1.23"),
        (-0.000123456, "g", f"{MINUS}0.000123"),
        (41.6, "int", "42"),
        (float("nan"), "g", "n/a"),
    ],
)
def test_numbers_read_at_three_significant_digits_or_whole_percents(value, fmt, text) -> None:
    assert F.format_number(value, fmt) == text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("intensty GRPO", "unknown metric or fact 'intensty'"),
        ("intensity XPO", "unknown algorithm(s) ['XPO']"),
        ("intensity GRPO alpha=0.7", "no rows for"),
        ("intensity GRPO col=nope", "no column 'nope'"),
        ("intensity GRPO agg=sum", "agg=sum is not one of"),
        ("intensity PPO GRPO agg=one", "agg=one but 4 rows match"),
        ("organism.base.evaluation.greedy_pass2", "unknown fact"),
    ],
)
def test_bad_queries_name_what_exists(query: str, message: str) -> None:
    with pytest.raises(F.FindingError, match=None) as err:
        synthetic_findings().value(query)
    assert message in str(err.value)


# --- the pages: no typed number, every role resolves on today's tables -------------------------


def test_detector_flags_typed_numbers_and_spares_data_code_math_and_names() -> None:
    text = (
        "Intensity fell by 75% (and 0.5 nats), but {num}`intensity GRPO` is data, `n = 3` is code,\n"
        "$\\alpha = 0.5$ and $\\langle a,\n b \\rangle = 0$ are math; 7B, pass@8, Qwen2.5, GSM8K,\n"
        "MATH-500, Table 1 and the 95% interval are names.\n\n1. a list item\n"
    )
    assert typed_numbers(text) == ["75%", "0.5"]


@pytest.mark.parametrize("page", PROSE_PAGES + PROSE_TEMPLATES)
def test_prose_has_no_hand_typed_number(page: str) -> None:
    typed = typed_numbers(_markdown_of(REPO / page))
    assert typed == [], (
        f"{page} types numbers by hand: {typed}; quote them from the tables with "
        "{num}`<metric> <ALGORITHMS> col=... agg=...` (helpers/book/findings.py)"
    )


def test_readme_findings_are_generated_text() -> None:
    block = prose.current_readme_block()
    assert typed_numbers(block.replace(prose.BEGIN, "").replace(prose.END, "")) != [], (
        "the README findings block has no numbers at all: is it empty?"
    )


@pytest.fixture(scope="module")
def today() -> F.Findings:
    found = F.Findings.load()
    if found.metrics.empty:
        pytest.skip("no result tables under data/results: run `python -m helpers.pipeline` first")
    return found


@pytest.mark.parametrize("page", PROSE_PAGES + PROSE_TEMPLATES)
def test_every_role_resolves_on_todays_tables(page: str, today: F.Findings) -> None:
    text = _markdown_of(REPO / page)
    rendered = prose.render_plain(text, today)
    assert "{num}" not in rendered


def test_readme_block_equals_the_tables(today: F.Findings) -> None:
    assert prose.current_readme_block() == prose.readme_block(today), (
        "README.md's findings block differs from data/results: run "
        "`python -m helpers.book.prose --write`"
    )


def test_a_stale_readme_block_is_found_and_rewritten(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{prose.BEGIN}\nold text, 75% typed\n{prose.END}\n\nrest\n")
    f = synthetic_findings()
    assert prose.current_readme_block(readme) != prose.readme_block(f)
    assert prose.write_readme(f, readme) is True
    assert prose.current_readme_block(readme) == prose.readme_block(f)
    assert readme.read_text().endswith("\n\nrest\n") and prose.write_readme(f, readme) is False
    changed = synthetic_findings({("GRPO", "intensity", 0.1): -0.9})
    assert prose.current_readme_block(readme) != prose.readme_block(changed)


def test_readme_without_markers_says_how_to_add_them(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no block\n")
    with pytest.raises(F.FindingError, match="has no findings block: add the lines"):
        prose.current_readme_block(readme)


# --- prose follows the tables ----------------------------------------------------------------


def test_a_table_change_changes_the_prose() -> None:
    before = synthetic_findings(
        {
            ("PPO", "intensity", 0.1): -0.40,
            ("GRPO", "intensity", 0.1): -0.30,
            ("PPO", "intensity", 0.5): -0.20,
            ("GRPO", "intensity", 0.5): -0.10,
        }
    )
    after = synthetic_findings(
        {
            ("PPO", "intensity", 0.1): -0.40,
            ("GRPO", "intensity", 0.1): -0.30,
            ("PPO", "intensity", 0.5): -0.20,
            ("GRPO", "intensity", 0.5): +0.35,
        }
    )
    text_before = prose.render_plain(prose.answer(before), before)
    text_after = prose.render_plain(prose.answer(after), after)
    assert (
        f"online RL (PPO, GRPO) lowers activation intensity ({MINUS}40% to {MINUS}10%; 0 of 4"
        in text_before
    )
    assert "4 of 4 against: against the study)" in text_before
    assert (
        f"does not consistently change activation intensity ({MINUS}40% to +35%; 1 of 4"
        in text_after
    )
    assert "3 of 4 against: undetermined)" in text_after


def test_the_answer_reads_the_verdict_control_when_the_tables_have_it() -> None:
    raw = synthetic_findings(
        {(a, "intensity", x): -0.5 for a in ("PPO", "GRPO") for x in (0.1, 0.5)}
    )
    normalised = raw.metrics.assign(
        control="per_grad_resid",
        rel_change=0.3,
        rel_ci_low=0.2,
        rel_ci_high=0.4,
        ci_excludes_zero=True,
        matches_claim=raw.metrics["claimed"] == "up",
    )
    both = pd.concat([raw.metrics.assign(control="raw"), normalised], ignore_index=True)
    f = F.Findings(
        metrics=F.derive(both.drop(columns=["supports", "contradicts"])), facts=raw.facts
    )
    text = prose.render_plain(prose.answer(f), f)
    assert f"raw definition, online RL (PPO, GRPO) lowers activation intensity ({MINUS}50%;" in text
    assert (
        "which removes the models' confidence, online RL raises activation intensity (+30%; 4 of 4 "
        "settings significant for the claim, 0 of 4 against: as the study reports)" in text
    )
    assert "DPO raises intensity (+30%)" in text  # the contrast on the verdict's control
    assert "so the study's contrast with DPO is not reproduced for activation intensity" in text


@pytest.mark.parametrize("page", PROSE_PAGES)
def test_the_pages_move_with_the_tables(page: str, today: F.Findings) -> None:
    """Halving every online-RL intensity change changes each page that quotes intensity."""
    text = (REPO / page).read_text(encoding="utf-8")
    metrics = today.metrics.copy()
    rows = (metrics["metric"] == "intensity") & metrics["algorithm"].isin(["PPO", "GRPO"])
    metrics.loc[rows, "rel_change"] = metrics.loc[rows, "rel_change"] / 2
    halved = F.Findings(metrics=metrics, facts=today.facts)
    generators = {"answer": prose.answer, "metric-changes": discussion.metric_changes}
    used = [g for name, g in generators.items() if f"{{generated}} {name}" in text]
    if "{num}`intensity PPO GRPO" not in text and not used:
        pytest.skip(f"{page} quotes no online-RL intensity")
    text += "".join("\n" + g(today) for g in used)
    assert prose.render_plain(text, today) != prose.render_plain(text, halved)


def test_generated_answer_marks_every_number_as_data() -> None:
    f = synthetic_findings()
    text = prose.answer(f)
    assert typed_numbers(text) == [] and text.count("{num}`") >= 6
    assert len([s for s in prose.render_plain(text, f).split(". ") if s]) == 3


# --- the discussion's generated paragraphs ---------------------------------------------------


def _organism_facts(steps_shares: dict[str, float]) -> dict[str, float]:
    facts: dict[str, float] = {}
    for name, share in steps_shares.items():
        ev = f"organism.{name}.evaluation"
        facts |= {
            f"{ev}.greedy_pass1": 0.3 + share / 2,
            f"{ev}.greedy_pass1_ci95.0": 0.25,
            f"{ev}.greedy_pass1_ci95.1": 0.35,
            f"{ev}.pass_at_k": 0.7,
            f"{ev}.greedy_format_shares.steps": share,
            f"{ev}.greedy_format_shares.pairs": 1 - share,
            f"{ev}.greedy_accuracy_by_format.steps": 0.5,
            f"{ev}.greedy_accuracy_by_format.pairs": 0.1,
        }
    return facts


def test_metric_bullets_choose_their_words_from_the_rows() -> None:
    cells = {(a, "intensity", x): -0.3 for a in ("PPO", "GRPO") for x in (0.1, 0.5)}
    cells |= {("DPO", "intensity", x): 0.2 for x in (0.1, 0.5)}
    f = synthetic_findings(cells)
    text = prose.render_plain(discussion.metric_changes(f), f)
    line = next(x for x in text.splitlines() if x.startswith("- **activation intensity**"))
    assert f"online RL lowers it ({MINUS}30%; 0 of 4 settings significant for the claim" in line
    assert "DPO raises it (+20%)" in line and "SFT (pretrained to SFT)" in line
    assert typed_numbers(discussion.metric_changes(f).replace("|dL/dr|", "")) == []


def test_confidence_paragraph_counts_settings_where_intensity_followed_the_loss() -> None:
    # synthetic losses fall for every algorithm: intensity "follows" when it falls too
    falling = synthetic_findings(
        {(a, "intensity", x): -0.3 for a in ("DPO", "PPO", "GRPO") for x in (0.1, 0.5)}
    )
    rising = synthetic_findings(
        {(a, "intensity", x): 0.3 for a in ("DPO", "PPO", "GRPO") for x in (0.1, 0.5)}
    )
    assert (
        "raw intensity followed it: it changed in the loss's direction in 6 of 6"
        in prose.render_plain(discussion.confidence(falling), falling)
    )
    assert "rarely followed it" in prose.render_plain(discussion.confidence(rising), rising)


def test_behaviour_says_where_online_rl_took_the_formats() -> None:
    base = synthetic_findings()
    toward = F.Findings(
        base.metrics, _organism_facts({"sft": 0.5, "ppo": 0.9, "grpo": 0.8, "dpo": 0.5})
    )
    mixed = F.Findings(
        base.metrics, _organism_facts({"sft": 0.5, "ppo": 0.9, "grpo": 0.3, "dpo": 0.5})
    )
    text = prose.render_plain(discussion.behaviour(toward), toward)
    assert "solves 55% of held-out problems greedily (95% interval 25% to 35%)" in text
    assert "share of answers in `steps`: PPO 90%, GRPO 80%, DPO 50%" in text
    assert "Online RL moved the base's answers toward `steps`." in text
    assert "not consistently toward or away" in prose.render_plain(
        discussion.behaviour(mixed), mixed
    )
    with pytest.raises(F.FindingError, match="publish the organisms"):
        discussion.behaviour(base)


def test_interval_lists_are_facts_by_index() -> None:
    facts: dict = {}
    F._flatten({"evaluation": {"ci95": [0.2, 0.4]}}, "organism.sft", facts)
    assert (
        facts["organism.sft.evaluation.ci95.0"] == 0.2
        and facts["organism.sft.evaluation.ci95.1"] == 0.4
    )


def test_derive_counts_significance_by_the_verdicts_rule() -> None:
    """Ten settings each with bootstrap p = 0.01 and an interval off zero: uncorrected, all ten
    are significant; Holm over the ten (what the verdict uses) leaves none, and so does prose."""
    rows = [
        {"pair": f"organism_p{i}", "algorithm": "PPO", "alpha": 0.3, "t_cut": 5,
         "metric": "intensity", "rel_change": 0.2, "p_boot": 0.01, "claimed": "up",
         "matches_claim": True, "ci_excludes_zero": True, "control": "raw"}
        for i in range(10)
    ]  # fmt: skip
    out = F.derive(pd.DataFrame(rows))
    assert not out["significant"].any() and not out["supports"].any()
    assert out["significant"].tolist() == verdict.significance_of(pd.DataFrame(rows)).tolist()
    rows[0]["p_boot"] = 0.0001  # Holm: 0.0001 * 10 < 0.05, the one significant setting
    assert F.derive(pd.DataFrame(rows))["supports"].tolist() == [True] + [False] * 9


def _causal_folder(
    root: Path, pair: str, algorithm: str, excess: tuple[float, float, float]
) -> None:
    folder = root / pair
    folder.mkdir(parents=True)
    e, lo, hi = excess
    base = {"pair": pair, "algorithm": algorithm, "k": 10, "seeds": 3, "accuracy_clean": 0.6}
    pd.DataFrame(
        [
            {**base, "set": "grown", "accuracy_drop": 0.5},
            {**base, "set": "random", "accuracy_drop": 0.2, "excess_drop": 0.3,
             "excess_low": 0.2, "excess_high": 0.4},
            {**base, "set": "mass-matched", "accuracy_drop": 0.5 - e, "excess_drop": e,
             "excess_low": lo, "excess_high": hi},
        ]
    ).to_csv(folder / "grown.csv", index=False)  # fmt: skip
    methods = []
    for method, sign in (("eap", 1), ("eap-ig", -1 if algorithm == "PPO" else 1)):
        methods.append({"alpha": 0.3, "method": method, "control": "raw", "metric": "intensity",
                        "rel_change": sign * 0.2, "rel_ci_low": sign * 0.2 - 0.05,
                        "rel_ci_high": sign * 0.2 + 0.05})  # fmt: skip
    pd.DataFrame(methods).to_csv(folder / "methods.csv", index=False)


def test_causal_facts_and_paragraph_follow_the_causal_tables(tmp_path: Path) -> None:
    """The causal paragraph reads each causal page's tables: excess drops with their intervals,
    sign agreement of the methods, and the online-RL-vs-DPO contrast chosen from the intervals."""
    _causal_folder(tmp_path, "causal_ppo", "PPO", (0.2, 0.1, 0.3))
    _causal_folder(tmp_path, "causal_dpo", "DPO", (0.0, -0.02, 0.03))
    facts = F._causal_facts(tmp_path)
    assert facts["causal.causal_ppo.grown.mass-matched.excess_drop"] == 0.2
    assert facts["causal.causal_ppo.methods.resolved_disagree"] == 1
    assert facts["causal.causal_dpo.methods.same_sign"] == 1
    f = F.Findings(metrics=pd.DataFrame(), facts=facts)
    text = prose.render_plain(discussion.causal(f), f)
    assert "+20 points for PPO (95% interval +10 to +30)" in text
    assert f"+0.0 points for DPO (95% interval {MINUS}2.0 to +3.0)" in text
    assert text.index("for PPO") < text.index("for DPO")  # the report's reading order
    assert "0 of 1 settings for PPO (1 resolved in opposite directions)" in text
    assert "not yet about the circuit" in text
    assert "faithfulness checks of the causal pages have no table yet" in text
    assert "Every online-RL interval lies above DPO's" in text
    assert typed_numbers(discussion.causal(f).replace("single-edge", "")) == []
    facts["causal.causal_ppo.grown.mass-matched.excess_low"] = 0.01  # overlaps DPO's interval
    f = F.Findings(metrics=pd.DataFrame(), facts=facts)
    assert "are not told apart" in prose.render_plain(discussion.causal(f), f)
    empty = F.Findings(metrics=pd.DataFrame(), facts={})
    assert "No *Causal evidence* page" in discussion.causal(empty)
