"""Sphinx extension of the report (``sphinx.extra_extensions`` in ``_config.yml``).

- ``{num}`query``` (role): a number from the result tables (:mod:`helpers.book.findings`), marked
  ``<abbr class="num">`` (the query shows on hover) so the site check can tell data from typed text;
- ``{generated} name`` (directive): a generated paragraph (:mod:`helpers.book.prose`);
- ``{results-at-a-glance}`` (directive): the landing page's forest plot, drawn at build time;
- MathJax from the ``django-static-mathjax`` package, copied into ``_static/mathjax`` so formulas
  render offline; pages that quote data are rebuilt whenever the tables change.
"""

from __future__ import annotations

import hashlib
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective

from helpers.book import discussion, glance, prose
from helpers.book.findings import FindingError, Findings, organisms_dir, resolve, results_dir
from helpers.paths import layout

MATHJAX_ENTRY = "mathjax/tex-mml-chtml.js"  # relative to _static; the script Sphinx loads
# What tex-mml-chtml loads on demand: fonts, TeX extensions, the menu and its accessibility parts.
MATHJAX_PARTS = ("tex-mml-chtml.js", "input", "output/chtml", "a11y", "ui", "adaptors", "sre")
GLANCE_PATH = "book/_generated/" + glance.FIGURE_NAME
CODE_INPUTS = ("src/helpers/book", "src/helpers/plots.py")


def mathjax_source() -> Path:
    """The es5 build of MathJax shipped by ``django-static-mathjax``; a clear error if absent."""
    try:
        root = Path(str(resources.files("mathjax"))) / "static" / "mathjax" / "es5"
    except ModuleNotFoundError as err:
        raise FindingError(
            "MathJax for offline math is missing: pip install django-static-mathjax "
            "(it is in the `report` extra)"
        ) from err
    if not (root / "tex-mml-chtml.js").is_file():
        raise FindingError(f"{root} has no tex-mml-chtml.js: reinstall django-static-mathjax")
    return root


def copy_mathjax(static_dir: Path) -> Path:
    """Copy the parts of MathJax the pages load into ``static_dir/mathjax`` (skipped when current)."""
    source, target = mathjax_source(), static_dir / "mathjax"
    stamp = target / ".source"
    if stamp.is_file() and stamp.read_text() == str(source):
        return target
    for part in MATHJAX_PARTS:
        src = source / part
        if src.is_dir():
            shutil.copytree(src, target / part, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / part)
    stamp.write_text(str(source))
    return target


def _data_digest(app: Sphinx) -> str:
    """Hash of every input a data-quoting page depends on: tables, metadata, the book code."""
    h = hashlib.sha256()
    roots = [_results(app), organisms_dir(), *(layout().root / c for c in CODE_INPUTS)]
    for root in roots:
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for f in files:
            if f.is_file() and f.suffix in (".csv", ".json", ".py"):
                h.update(str(f).encode())
                h.update(f.read_bytes())
    return h.hexdigest()


def _results(app: Sphinx) -> Path:
    return Path(app.config.rl_results_dir) if app.config.rl_results_dir else results_dir()


def findings(env: BuildEnvironment) -> Findings:
    """The tables, read once per build."""
    app = env.app
    if getattr(app, "rl_findings", None) is None:
        app.rl_findings = Findings.load(_results(app))  # type: ignore[attr-defined]
    return app.rl_findings  # type: ignore[attr-defined]


def _uses_data(env: BuildEnvironment) -> None:
    if not hasattr(env, "rl_data_docs"):
        env.rl_data_docs = set()  # type: ignore[attr-defined]
    env.rl_data_docs.add(env.docname)  # type: ignore[attr-defined]


def num_role(name, rawtext, text, lineno, inliner, options=None, content=None):  # noqa: ANN001
    """``{num}`query```: the value of ``query`` in the result tables."""
    env = inliner.document.settings.env
    _uses_data(env)
    try:
        value = resolve(findings(env), text)
    except FindingError as err:
        msg = inliner.reporter.error(f"{{num}}`{text}`: {err}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    # <abbr class="num" title="query">: the query shows on hover, and the site check finds it.
    return [nodes.abbreviation(rawtext, value, explanation=text, classes=["num"])], []


GENERATORS = {**prose.GENERATORS, **discussion.GENERATORS}


class Generated(SphinxDirective):
    """``{generated} answer``: a paragraph written from the tables by :mod:`helpers.book.prose`."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        _uses_data(self.env)
        name = self.arguments[0]
        if name not in GENERATORS:
            raise self.error(f"unknown generated text {name!r}; known: {sorted(GENERATORS)}")
        try:
            text = GENERATORS[name](findings(self.env))
        except FindingError as err:
            raise self.error(str(err)) from err
        container = nodes.container(classes=["generated", f"generated-{name}"])
        container += self.parse_text_to_nodes(text)
        return [container]


class ResultsAtAGlance(SphinxDirective):
    """``{results-at-a-glance}``: draw the forest plot from the tables and show it as a figure."""

    option_spec = {"alpha": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        _uses_data(self.env)
        alpha = self.options.get("alpha", self.config.rl_focus_alpha)
        table_findings = findings(self.env)
        path = Path(self.env.srcdir) / GLANCE_PATH
        try:
            shown = glance.glance_table(
                table_findings, alpha and float(alpha), self.config.rl_glance_controls
            )
            caption = glance.write_figure(
                table_findings, path, float(shown["alpha"].iloc[0]), self.config.rl_glance_controls
            )
        except (ValueError, FindingError) as err:
            raise self.error(f"results at a glance: {err}") from err
        controls = ", ".join(dict.fromkeys(shown["control"]))
        block = (
            f"```{{figure}} /{GLANCE_PATH}\n:name: results-at-a-glance\n"
            f":alt: Forest plot of the relative change of each metric, per algorithm and control "
            f"({controls}), at alpha {shown['alpha'].iloc[0]:g}\n\n"
            f"Results at a glance, at $\\alpha$ = {shown['alpha'].iloc[0]:g} (controls: {controls}). "
            f"{caption}\n```"
        )
        return self.parse_text_to_nodes(block)


def _outdated(app: Sphinx, env: BuildEnvironment, added, changed, removed) -> list[str]:  # noqa: ANN001
    """Pages that quote the tables, when the tables (or the code that reads them) changed."""
    digest = _data_digest(app)
    stale = getattr(env, "rl_data_digest", None) != digest
    env.rl_data_digest = digest  # type: ignore[attr-defined]
    docs: set[str] = getattr(env, "rl_data_docs", set())
    return sorted(d for d in docs if d in env.found_docs) if stale else []


def _purge(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    getattr(env, "rl_data_docs", set()).discard(docname)


def _merge(app: Sphinx, env: BuildEnvironment, docnames, other: BuildEnvironment) -> None:  # noqa: ANN001
    _uses_data(env)
    env.rl_data_docs |= getattr(other, "rl_data_docs", set()) & set(docnames)  # type: ignore[attr-defined]


def _use_local_mathjax(app: Sphinx) -> None:
    if app.config.rl_offline_mathjax:
        mathjax_source()  # fail early, with the fix, when the package is missing
        app.config.mathjax_path = MATHJAX_ENTRY


def _install_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.config.rl_offline_mathjax and app.builder.format == "html":
        copy_mathjax(Path(app.outdir) / "_static")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("rl_results_dir", "", "env")
    app.add_config_value("rl_focus_alpha", 0.3, "env")
    app.add_config_value("rl_glance_controls", ["raw"], "env")
    app.add_config_value("rl_offline_mathjax", True, "html")
    app.add_role("num", num_role)
    app.add_directive("generated", Generated)
    app.add_directive("results-at-a-glance", ResultsAtAGlance)
    app.connect("builder-inited", _use_local_mathjax)
    app.connect("env-get-outdated", _outdated)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("build-finished", _install_mathjax)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
