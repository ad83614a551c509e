"""The built book as a reader meets it: served on localhost and opened in headless Chromium.

Builds the book strictly into a temporary folder (Sphinx warnings fail it), or with
``BOOK_SITE_REUSE=1`` checks the ``_build/html`` that ``make book`` just wrote. Three pages are
opened (the root plus, first, executed notebooks from the TOC): each must have the expected
<title>, no broken image, no failed same-origin request, and on notebook pages a visible
provenance block at the top and no visible injected-parameters cell. Then every TOC page is
checked as a reader meets it: formulas typeset by the bundled MathJax (no raw ``\\(``), no machine
paths, warnings, tracebacks or stderr, nothing wider than the window, no request to another host;
the landing page shows its results-at-a-glance figure and links the PDF, which is built too;
screenshots of three pages at 1300 px land in ``_build/site-check/`` (git-ignored) for review.
``BOOK_SITE_TIMEOUT`` (seconds, default 30) gives a loaded machine longer per page.

Run: ``.venv/bin/python -m pytest -m slow tests/test_book_site.py``. Chromium is whichever one is on
PATH or ``$CHROMIUM``; without one the tests skip with the install command, and install Debian's
``chromium`` themselves only when ``RL_CIRCUITRY_INSTALL_CHROMIUM=1`` (as root).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sitecheck import Browser, PageReport, chromium_or_reason, screenshot, serve_directory

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
STRICT_ARGS = ("--builder", "html", "-W", "-n", "--keep-going")
REUSE_ENV = "BOOK_SITE_REUSE"
N_PAGES = 3


@dataclass(frozen=True)
class TocPage:
    """One page of the table of contents: its source file and what its <title> must be."""

    docname: str  # path without suffix, as in _toc.yml, e.g. "book/intro"
    source: Path
    heading: str

    @property
    def is_notebook(self) -> bool:
        return self.source.suffix == ".ipynb"


def _first_heading(source: Path) -> str:
    """Text of the first level-1 heading of a MyST page or notebook, inline markup removed."""
    if source.suffix == ".ipynb":
        import nbformat

        nb = nbformat.read(source, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    else:
        text = source.read_text(encoding="utf-8")
        text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    match = re.search(r"^# +(.+?) *#* *$", text, flags=re.M)
    if match is None:
        raise ValueError(f"{source} has no '# ' heading: Sphinx would title the page oddly")
    return re.sub(r"[`*$]", "", match.group(1)).strip()


def _resolve(docname: str) -> Path:
    for suffix in (".md", ".ipynb", ".rst"):
        if (path := REPO / f"{docname}{suffix}").is_file():
            return path
    raise FileNotFoundError(f"_toc.yml names {docname!r} but no .md/.ipynb/.rst file exists")


def _toc_docnames(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("file"), str):
            yield node["file"]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key) or []:
                yield from _toc_docnames(child)
    elif isinstance(node, list):
        for child in node:
            yield from _toc_docnames(child)


def toc_pages() -> list[TocPage]:
    """Every page of _toc.yml in reading order, root first."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"], *_toc_docnames(toc)]
    return [TocPage(n, src := _resolve(n), _first_heading(src)) for n in dict.fromkeys(names)]


def pages_to_open(pages: list[TocPage], n: int = N_PAGES) -> list[TocPage]:
    """The root, then executed notebooks, then other chapters, in TOC order: ``n`` pages."""
    root, rest = pages[0], pages[1:]
    ordered = [p for p in rest if p.is_notebook] + [p for p in rest if not p.is_notebook]
    return [root, *ordered][:n]


BOOK_TITLE = yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf-8"))["title"]
PAGES = pages_to_open(toc_pages())


@dataclass(frozen=True)
class BuiltSite:
    html: Path
    seconds: float
    log: str


def _jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.is_file():
        return str(exe)
    if found := shutil.which("jupyter-book"):
        return found
    pytest.fail("jupyter-book is not installed: run `make setup` (it is in the `report` extra)")


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The strict build of the book, or the fresh existing one when BOOK_SITE_REUSE=1."""
    if os.environ.get(REUSE_ENV) == "1":
        html = REPO / "_build" / "html"
        stale = [
            p.docname
            for p in toc_pages()
            if not (html / f"{p.docname}.html").is_file()
            or (html / f"{p.docname}.html").stat().st_mtime < p.source.stat().st_mtime
        ]
        if stale or not (html / "index.html").is_file():
            pytest.fail(
                f"{REUSE_ENV}=1 but {html} is missing or older than {stale or 'index.html'}: "
                f"run `make html` first, or unset {REUSE_ENV} to build here"
            )
        return BuiltSite(html=html, seconds=0.0, log="(reused)")
    out = tmp_path_factory.mktemp("book")
    start = time.perf_counter()
    proc = subprocess.run(
        [_jupyter_book(), "build", str(REPO), *STRICT_ARGS, "--path-output", str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"strict book build failed (Sphinx warnings are errors):\n{log[-6000:]}"
    )
    return BuiltSite(html=out / "_build" / "html", seconds=time.perf_counter() - start, log=log)


@pytest.fixture(scope="session")
def chromium() -> str:
    exe, reason = chromium_or_reason()
    if exe is None:
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="session")
def base_url(built_site: BuiltSite) -> Iterator[str]:
    with serve_directory(built_site.html) as url:
        yield url


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Browser]:
    with Browser(chromium, timeout=float(os.environ.get("BOOK_SITE_TIMEOUT", "30"))) as b:
        yield b


def _url_for(page: TocPage, base: str) -> str:
    # The root is opened through index.html, so its redirect is checked too.
    return base + ("index.html" if page == PAGES[0] else f"{page.docname}.html")


def test_pages_cover_notebooks_first() -> None:
    """Executed notebooks, once the TOC has any, are among the pages opened."""
    notebooks = [p for p in toc_pages()[1:] if p.is_notebook]
    opened = [p for p in PAGES if p.is_notebook]
    assert len(opened) == min(len(notebooks), N_PAGES - 1)
    assert PAGES[0].docname == yaml.safe_load((REPO / "_toc.yml").read_text())["root"]


@pytest.mark.parametrize("page", PAGES, ids=[p.docname for p in PAGES])
def test_page_reads_right(page: TocPage, browser: Browser, base_url: str) -> None:
    report: PageReport = browser.inspect(_url_for(page, base_url))

    assert report.url == f"{base_url}{page.docname}.html"
    assert report.title == f"{page.heading} — {BOOK_TITLE}"
    assert report.broken_images == [], f"images that did not load: {report.broken_images}"
    assert report.failed_requests == [], f"requests that failed: {report.failed_requests}"
    if not page.is_notebook:
        return
    assert report.injected_parameters_visible == 0, "papermill's injected-parameters cell shows"
    assert report.provenance, "no element with class 'provenance' on an executed notebook page"
    block = report.provenance[0]
    assert block.visible and block.at_top, f"provenance block hidden or not at the top: {block}"
    assert re.search(r"\b[0-9a-f]{7,40}\b", block.text), f"no commit in provenance: {block.text!r}"
    assert re.search(r"\d{4}-\d{2}-\d{2}", block.text), f"no date in provenance: {block.text!r}"


def test_index_screenshot(chromium: str, browser: Browser, base_url: str, tmp_path: Path) -> None:
    """The landing page renders: a 1280x900 PNG with more than a blank background."""
    from PIL import Image

    landing = browser.inspect(base_url + "index.html").url
    path = Path(os.environ.get("BOOK_SITE_SCREENSHOT", tmp_path / "index.png"))
    screenshot(chromium, landing, path)
    with Image.open(path) as img:
        assert img.size == (1280, 900)
        colours = img.convert("L").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 20, "the screenshot is (almost) one flat colour"


FIXTURE_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<title>Fixture — Book</title></head><body>
<div class="provenance">ran {commit} on 2026-11-23 with n=3</div>
<div class="cell tag_injected-parameters"><pre>n = 3</pre></div>
<img src="figure.png" alt="fine"><img src="missing.png" alt="broken">
<img src="figure.png" loading="lazy" style="margin-top: 3000px" alt="lazy, far below">
</body></html>"""


def test_checker_sees_what_is_wrong(browser: Browser, tmp_path: Path) -> None:
    """On a hand-made page the checker finds the broken image, the 404 and the visible cell."""
    from PIL import Image

    Image.new("RGB", (4, 3), "red").save(tmp_path / "figure.png")
    (tmp_path / "page.html").write_text(FIXTURE_PAGE.format(commit="0123abc"))
    (tmp_path / "index.html").write_text(
        '<meta http-equiv="refresh" content="0; url=page.html"><title>redirect</title>'
    )
    with serve_directory(tmp_path) as base:
        report = browser.inspect(base + "index.html")

    assert report.url == base + "page.html" and report.title == "Fixture — Book"
    assert [(img.src.rsplit("/", 1)[1], img.natural_width) for img in report.images] == [
        ("figure.png", 4),
        ("missing.png", 0),
        ("figure.png", 4),
    ]
    assert report.broken_images == [base + "missing.png"]
    assert report.failed_requests == [base + "missing.png (404)"]
    [block] = report.provenance
    assert block.visible and block.at_top and "0123abc" in block.text
    assert report.injected_parameters_visible == 1


# --- the page as a reader meets it: math typeset, no noise, fits the window (issue 17) ----------

ALL_PAGES = toc_pages()
MATH_PAGES = [p for p in ALL_PAGES if p.docname.endswith("/method") or "/pair_" in p.docname]
PROSE_PAGES = [p for p in ALL_PAGES if p.docname.endswith(("/intro", "/discussion"))]
SITE_CHECK_DIR = REPO / "_build" / "site-check"  # screenshots for a reviewer (git-ignored)
SCREENSHOT_WIDTH = 1300


@pytest.fixture(scope="session")
def reports(browser: Browser, base_url: str) -> dict[str, PageReport]:
    """Every TOC page opened once; reports keyed by docname."""
    return {p.docname: browser.inspect(_url_for(p, base_url)) for p in ALL_PAGES}


@pytest.mark.parametrize("page", ALL_PAGES, ids=[p.docname for p in ALL_PAGES])
def test_page_has_no_noise_and_fits(page: TocPage, reports: dict[str, PageReport]) -> None:
    r = reports[page.docname]
    assert r.machine_paths == [], f"machine paths on the page: {r.machine_paths}"
    assert r.warnings == [], f"warnings on the page: {r.warnings}"
    assert r.tracebacks == [] and r.error_outputs == 0, f"tracebacks: {r.tracebacks}"
    assert r.stderr_outputs == 0, "stderr output shown on the page"
    assert r.raw_tex == [], f"untypeset TeX: {r.raw_tex}"
    assert r.math_typeset == r.math_total, f"{r.math_total - r.math_typeset} formulas not typeset"
    assert r.external_requests == [], f"the page needs the network: {r.external_requests}"
    assert r.page_width <= r.window_width, (
        f"page is {r.page_width} px wide in a {r.window_width} px window (a table or figure "
        "overflows: it should scroll in its cell)"
    )


@pytest.mark.parametrize("page", MATH_PAGES, ids=[p.docname for p in MATH_PAGES])
def test_formulas_render_offline(page: TocPage, reports: dict[str, PageReport]) -> None:
    r = reports[page.docname]
    assert r.math_total > 0, "no formula found on a page that has some: is MathJax loaded?"
    assert r.math_typeset == r.math_total and r.raw_tex == []


@pytest.mark.parametrize("page", PROSE_PAGES, ids=[p.docname for p in PROSE_PAGES])
def test_prose_numbers_come_from_the_tables(page: TocPage, reports: dict[str, PageReport]) -> None:
    """Numbers are <abbr class="num"> from the {num} role (tests/test_book_numbers.py: all are)."""
    assert reports[page.docname].data_numbers >= 3


def test_landing_page_has_the_answer_figure_and_pdf(reports: dict[str, PageReport]) -> None:
    r = reports[PAGES[0].docname]
    glance = [i for i in r.images if i.src.endswith("/results_at_a_glance.png")]
    assert glance and all(i.loaded for i in glance), f"no results-at-a-glance figure: {r.images}"
    base = r.url.rsplit("/", 2)[0] + "/"  # the site root (the landing page is book/intro.html)
    assert r.pdf_links == [base + "rl-circuitry.pdf"], r.pdf_links


def test_screenshots_for_review(browser: Browser, base_url: str) -> None:
    """Three pages at 1300 px (and the landing page dark) into _build/site-check/, for a reviewer."""
    from PIL import Image

    pages = [PAGES[0], *MATH_PAGES[:2]]
    shots = [
        browser.capture(
            base_url + f"{p.docname}.html",
            SITE_CHECK_DIR / f"{p.docname.replace('/', '_')}.png",
            width=SCREENSHOT_WIDTH,
        )
        for p in pages
    ]
    shots.append(
        browser.capture(
            base_url + f"{PAGES[0].docname}.html",
            SITE_CHECK_DIR / "intro_dark.png",
            width=SCREENSHOT_WIDTH,
            theme="dark",
        )
    )
    for path in shots:
        with Image.open(path) as img:
            assert img.size[0] == SCREENSHOT_WIDTH and img.size[1] > 900
            assert len(img.convert("L").getcolors(maxcolors=1 << 16) or range(99)) > 20


def test_pdf_builds_offline(chromium: str, tmp_path: Path) -> None:
    """`make pdf`: the single-page build printed by headless Chromium, every page included."""
    from helpers.book import pdf

    out = pdf.print_pdf(pdf.build_single_page(REPO), tmp_path / pdf.PDF_NAME, chromium)
    data = out.read_bytes()
    assert data.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= len(ALL_PAGES), f"{pages} PDF pages for {len(ALL_PAGES)} chapters"


NOISY_PAGE = r"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>Noisy — Book</title>
<script src="https://cdn.example.org/mathjax.js"></script></head><body><main>
<p>The loss is \(T_\text{cut}\) tokens; see <abbr class="num" title="q">42%</abbr>.</p>
<pre>\(in code\) is fine: /work/main/x.py</pre>
<div class="output text_plain">PosixPath('/work/main/data/results/organism_grpo')</div>
<div class="output stderr">/usr/lib/python3/tqdm/auto.py:21: TqdmWarning: IProgress not found</div>
<div class="output traceback">Traceback (most recent call last): boom</div>
<div style="width: 3000px">a table too wide for the window</div>
<a href="rl-circuitry.pdf">PDF</a>
</main></body></html>"""


def test_checker_sees_noise_raw_tex_and_width(browser: Browser, tmp_path: Path) -> None:
    """On a hand-made page every new detector fires; TeX inside a code block is left alone."""
    (tmp_path / "index.html").write_text(NOISY_PAGE)
    with serve_directory(tmp_path) as base:
        r = browser.inspect(base + "index.html")
    [raw] = r.raw_tex  # the formula in prose, not the one in the code block
    assert r"is \(T_\text{cut}\) tokens" in raw
    assert r.math_total == 0 and r.data_numbers == 1 and r.pdf_links == [base + "rl-circuitry.pdf"]
    assert any("PosixPath(" in p for p in r.machine_paths)
    assert any(p.startswith("/work/main/data/results") for p in r.machine_paths)
    assert any(w.startswith("TqdmWarning: IProgress") for w in r.warnings)
    assert any(t.startswith("Traceback (most recent call last)") for t in r.tracebacks)
    assert r.stderr_outputs == 1 and r.error_outputs == 1
    assert r.page_width > r.window_width
    assert r.external_requests == ["https://cdn.example.org/mathjax.js"]
