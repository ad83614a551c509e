"""Every number the prose quotes, looked up in the result tables: the ``{num}`` role's engine.

A query names a metric (a row set of ``data/results/*/metrics.csv``) or a fact (a value of a pair's
``summary.json`` or an organism's ``metadata.json``), and comes back as reading text::

    intensity PPO GRPO alpha=0.5            -> "−84% to −75%" (range of rel_change over the rows)
    intensity GRPO alpha=0.5 agg=ci          -> "−83% [−84%, −83%]"
    kurtosis PPO GRPO col=matches_claim agg=frac -> "7 of 8"
    organism.base.evaluation.greedy_pass1    -> "59%"

Tokens: the first names the metric or fact; upper-case tokens pick algorithms; ``column=value``
filters any table column; ``col=``, ``agg=`` and ``fmt=`` choose the column, the aggregation
(``one``, ``range``, ``ci``, ``mean``, ``median``, ``min``, ``max``, ``n``, ``frac``, ``share``) and the
format (``pct``, ``pct+``, ``int``, ``g``). The same engine serves the Sphinx role, the generated
prose and the README, so a prose number cannot drift from its table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from helpers import verdict
from helpers.paths import layout

MINUS = "\u2212"
PERCENT_COLUMNS = frozenset({"rel_change", "rel_ci_low", "rel_ci_high", "loss_change"})
AGGREGATIONS = ("one", "range", "ci", "mean", "median", "min", "max", "n", "frac", "share")
FORMATS = ("pct", "pct+", "pp", "pp+", "int", "g")  # pp: signed percentage points
DEFAULT_CONTROL = "raw"  # the study's own definition, when the tables carry a `control` column


class FindingError(LookupError):
    """A query names no table rows or no fact; the message lists what exists."""


def results_dir() -> Path:
    """Where the book's result tables live (``paths.layout().results``)."""
    return layout().results


def organisms_dir() -> Path:
    """Where the committed organisms (and their ``metadata.json``) live."""
    return layout().organisms


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Dotted keys for nested JSON; a list of records is keyed by its ``model``/``name`` field."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        for i, item in enumerate(value):
            label = item.get("model", item.get("name", i))
            _flatten(
                {k: v for k, v in item.items() if k not in ("model", "name")},
                f"{prefix}.{label}",
                out,
            )
    else:
        out[prefix] = value
        if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
            for i, item in enumerate(value):  # an interval [low, high]: prefix.0, prefix.1
                out[f"{prefix}.{i}"] = item


def _read_json_facts(paths: Iterable[tuple[str, Path]]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for prefix, path in paths:
        _flatten(json.loads(path.read_text(encoding="utf-8")), prefix, facts)
    return facts


def derive(metrics: pd.DataFrame) -> pd.DataFrame:
    """Columns the prose counts with: a change for / against the study's claim, the loss change.

    ``supports``: a significant change in the claimed direction; ``contradicts``: a significant
    change the other way. Significant is the verdict's rule (`verdict.significance_of`: Holm over
    each control's distinct settings), so prose counts and the verdict agree; tables without the
    verdict's columns fall back to their interval excluding zero. ``loss_change``: relative change
    of the mean self-loss (EAP scores scale with its gradient, so it is read beside every metric);
    ``follows_loss``: the metric changed in the loss's direction.
    """
    out = metrics.copy()
    if set(verdict.REQUIRED) <= set(out.columns):
        out["significant"] = verdict.significance_of(out)
    rule = "significant" if "significant" in out.columns else "ci_excludes_zero"
    if {"matches_claim", rule} <= set(out.columns):
        sure = out[rule].astype(bool)
        out["supports"] = out["matches_claim"].astype(bool) & sure
        out["contradicts"] = ~out["matches_claim"].astype(bool) & sure
    if {"loss_base", "loss_tuned"} <= set(out.columns):
        out["loss_change"] = out["loss_tuned"] / out["loss_base"] - 1
        out["follows_loss"] = (out["rel_change"] > 0) == (out["loss_change"] > 0)
    return out


GROWN_COLUMNS = ("k", "seeds", "accuracy_clean", "accuracy_drop", "excess_drop", "excess_low",
                 "excess_high")  # fmt: skip


def _causal_facts(results: Path) -> dict[str, Any]:
    """Facts of each causal page (a results folder with ``grown.csv``), under ``causal.<pair>``:
    ``algorithm``; ``grown.<set>.<column>``; ``methods.<field>`` (`method_metrics.agreement` of
    EAP and EAP-IG); ``faithfulness.preferred|wins|comparisons`` (`causal.preferred_method`)."""
    from helpers import causal, method_metrics  # the page modules' own rules, not a copy

    facts: dict[str, Any] = {}
    for path in sorted(results.glob("*/grown.csv")):
        key, folder = f"causal.{path.parent.name}", path.parent
        grown = pd.read_csv(path)
        facts[f"{key}.algorithm"] = str(grown["algorithm"].iloc[0])
        for row in grown.to_dict("records"):
            for column in GROWN_COLUMNS:
                value = row.get(column)
                if value is not None and not (isinstance(value, float) and math.isnan(value)):
                    facts[f"{key}.grown.{row['set']}.{column}"] = value
        if (folder / "methods.csv").is_file():
            agree = method_metrics.agreement(pd.read_csv(folder / "methods.csv"))
            for name, value in vars(agree).items():
                facts[f"{key}.methods.{name}"] = value
        if (folder / "faithfulness.csv").is_file():
            method, wins, total = causal.preferred_method(pd.read_csv(folder / "faithfulness.csv"))
            facts.update({f"{key}.faithfulness.preferred": method.upper(),
                          f"{key}.faithfulness.wins": wins,
                          f"{key}.faithfulness.comparisons": total})  # fmt: skip
    return facts


def _table_facts(metrics: pd.DataFrame) -> dict[str, Any]:
    """What the tables cover: ``table.n_pairs``, ``table.n_settings``, ``table.alphas``."""
    alphas = sorted(metrics["alpha"].unique())
    return {
        "table.n_pairs": int(metrics["pair"].nunique()),
        "table.n_settings": int(len(metrics.groupby(["pair", "alpha"]))),
        "table.alphas": ", ".join(f"{a:g}" for a in alphas),
    }


@dataclass(frozen=True)
class Findings:
    """The result tables (long metric rows) and facts (dotted keys) that prose numbers come from."""

    metrics: pd.DataFrame
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, results: Path | None = None, organisms: Path | None = None) -> Findings:
        """Read every pair's ``metrics.csv`` and ``summary.json`` and every organism's metadata."""
        results = results_dir() if results is None else Path(results)
        organisms = organisms_dir() if organisms is None else Path(organisms)
        frames = [pd.read_csv(p) for p in sorted(results.glob("*/metrics.csv"))]
        metrics = derive(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()
        sources = [(f"pair.{p.parent.name}", p) for p in sorted(results.glob("*/summary.json"))]
        sources += [
            (f"organism.{p.parent.name}", p) for p in sorted(organisms.glob("*/metadata.json"))
        ]
        facts = _read_json_facts(sources)
        facts.update(_causal_facts(results))
        if not metrics.empty:
            facts.update(_table_facts(metrics))
        return cls(metrics=metrics, facts=facts)

    def value(self, query: str) -> str:
        """The reading text of one query (see the module docstring)."""
        return resolve(self, query)

    @property
    def algorithms(self) -> list[str]:
        return sorted(self.metrics["algorithm"].unique()) if len(self.metrics) else []


@dataclass(frozen=True)
class Query:
    """A parsed ``{num}`` query."""

    name: str
    algorithms: tuple[str, ...] = ()
    filters: tuple[tuple[str, str], ...] = ()
    column: str = "rel_change"
    agg: str = ""
    fmt: str = ""


def parse(text: str) -> Query:
    """Split a query into the metric or fact name, algorithms, filters and options."""
    tokens = text.split()
    if not tokens:
        raise FindingError("empty {num} query: give a metric or fact name")
    name, rest = tokens[0], tokens[1:]
    algorithms, filters, options = [], [], {"col": "rel_change", "agg": "", "fmt": ""}
    for token in rest:
        key, sep, val = token.partition("=")
        if not sep:
            algorithms.append(token)
        elif key in options:
            options[key] = val
        else:
            filters.append((key, val))
    if options["agg"] and options["agg"] not in AGGREGATIONS:
        raise FindingError(f"{text!r}: agg={options['agg']} is not one of {AGGREGATIONS}")
    if options["fmt"] and options["fmt"] not in FORMATS:
        raise FindingError(f"{text!r}: fmt={options['fmt']} is not one of {FORMATS}")
    return Query(
        name, tuple(algorithms), tuple(filters), options["col"], options["agg"], options["fmt"]
    )


def _matches(series: pd.Series, wanted: str) -> pd.Series:
    """Rows whose value equals ``wanted`` (numbers compared as numbers; ``a|b`` means either)."""
    mask = pd.Series(False, index=series.index)
    for option in wanted.split("|"):
        try:
            mask |= pd.to_numeric(series, errors="coerce").sub(float(option)).abs().lt(1e-9)
        except ValueError:
            mask |= series.astype(str) == option
    return mask


def select(findings: Findings, query: Query) -> pd.DataFrame:
    """The metric rows a query names; an error lists the known metrics, algorithms or columns."""
    table = findings.metrics
    if table.empty:
        raise FindingError(f"no result tables under {results_dir()}: run the pipeline first")
    known = sorted(table["metric"].unique())
    if query.name not in known:
        raise FindingError(f"unknown metric or fact {query.name!r}; metrics: {known}")
    rows = table[table["metric"] == query.name]
    if query.algorithms:
        missing = set(query.algorithms) - set(table["algorithm"])
        if missing:
            raise FindingError(
                f"unknown algorithm(s) {sorted(missing)}; known: {findings.algorithms}"
            )
        rows = rows[rows["algorithm"].isin(query.algorithms)]
    filters = dict(query.filters)
    if "control" in table.columns and "control" not in filters:
        filters["control"] = DEFAULT_CONTROL
    for column, wanted in filters.items():
        if column not in table.columns:
            raise FindingError(f"no column {column!r} to filter on; columns: {list(table.columns)}")
        rows = rows[_matches(rows[column], wanted)]
    if query.column not in table.columns:
        raise FindingError(f"no column {query.column!r}; columns: {list(table.columns)}")
    if rows.empty:
        raise FindingError(f"no rows for {query}: check the filters against the tables")
    return rows


def format_number(value: float, fmt: str) -> str:
    """Reading text for one number: percent (signed or not), integer, or 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if fmt in ("pct", "pct+"):
        pct = 100 * float(value)
        digits = 0 if abs(pct) >= 10 or pct == 0 else (1 if abs(pct) >= 1 else 2)
        text = f"{pct:+.{digits}f}" if fmt == "pct+" else f"{pct:.{digits}f}"
        return text.replace("-", MINUS) + "%"
    if fmt in ("pp", "pp+"):  # signed percentage points; "pp+" names the unit
        pts = 100 * float(value)
        text = f"{pts:+.{0 if abs(pts) >= 10 else 1}f}".replace("-", MINUS)
        return text + " points" if fmt == "pp+" else text
    if fmt == "int":
        return f"{round(float(value)):d}".replace("-", MINUS)
    return f"{float(value):.3g}".replace("-", MINUS)


def _default_fmt(column: str, values: pd.Series) -> str:
    if column in PERCENT_COLUMNS:
        return "pct+"
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "int"
    return "g"


def _aggregate(rows: pd.DataFrame, query: Query) -> str:
    values = rows[query.column]
    agg = query.agg or ("one" if len(rows) == 1 else "range")
    fmt = query.fmt or _default_fmt(query.column, values)
    if agg in ("n", "frac", "share"):
        truth = values.astype(bool)
        if agg == "n":
            return str(int(truth.sum()))
        if agg == "frac":
            return f"{int(truth.sum())} of {len(truth)}"
        return format_number(float(truth.mean()), query.fmt or "pct")
    if agg == "one":
        if len(rows) != 1:
            raise FindingError(f"{query.name}: agg=one but {len(rows)} rows match; add filters")
        return format_number(float(values.iloc[0]), fmt)
    if agg == "ci":
        if len(rows) != 1 or query.column != "rel_change":
            raise FindingError(f"{query.name}: agg=ci needs one row of rel_change, got {len(rows)}")
        row = rows.iloc[0]
        low, high = (format_number(row[c], fmt) for c in ("rel_ci_low", "rel_ci_high"))
        return f"{format_number(row['rel_change'], fmt)} [{low}, {high}]"
    if agg == "range":
        low, high = (format_number(v, fmt) for v in (values.min(), values.max()))
        return low if low == high else f"{low} to {high}"
    return format_number(float(getattr(values, agg)()), fmt)


def _fact(findings: Findings, query: Query) -> str:
    value = findings.facts[query.name]
    if isinstance(value, bool | str) or value is None:
        return str(value)
    fraction_words = ("accuracy", "share", "pass", "maj@", "greedy_pass1")
    looks_fraction = 0 <= value <= 1 and any(w in query.name for w in fraction_words)
    fmt = query.fmt or ("pct" if looks_fraction else "int" if isinstance(value, int) else "g")
    return format_number(value, fmt)


def resolve(findings: Findings, text: str) -> str:
    """Reading text for a query: a fact when the name is one, else an aggregate of metric rows."""
    query = parse(text)
    if query.name in findings.facts:
        return _fact(findings, query)
    if "." in query.name:
        close = sorted(k for k in findings.facts if k.startswith(query.name.rsplit(".", 1)[0]))
        raise FindingError(f"unknown fact {query.name!r}; facts under that prefix: {close[:20]}")
    return _aggregate(select(findings, query), query)
