"""The book as one PDF, built offline: the single-page HTML build printed by headless Chromium.

Jupyter Book's ``pdfhtml`` builder downloads its own Chromium (no network here) and its LaTeX
builder needs TeX Live; Debian's ``chromium`` prints the single-page build with formulas typeset
by the bundled MathJax. ``python -m helpers.book.pdf`` writes ``_build/html/rl-circuitry.pdf``,
which the landing page links; without Chromium it says how to install it and exits 0 (``--strict``:
exits 1), so ``make book`` still builds the HTML.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from helpers.paths import layout

PDF_NAME = "rl-circuitry.pdf"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "apt-get install chromium (Debian/Ubuntu), or set $CHROMIUM to a Chrome binary"
PRINT_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-pdf-header-footer",
    "--virtual-time-budget=60000",  # let MathJax typeset everything before printing
)


def find_browser() -> str | None:
    """A Chromium-family executable: ``$CHROMIUM``, else the first known name on PATH."""
    if env := os.environ.get("CHROMIUM"):
        return shutil.which(env)
    return next((p for name in BROWSERS if (p := shutil.which(name))), None)


def build_single_page(repo: Path | None = None) -> Path:
    """Build the single-page HTML (``_build/singlehtml``); returns the printable page.

    Sphinx writes the whole book into the root document's file (``book/intro.html``) with links
    relative to the build folder, so the page is copied up there before printing.
    """
    repo = layout().root if repo is None else repo
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [
        str(exe) if exe.is_file() else "jupyter-book",
        "build",
        str(repo),
        "--builder",
        "singlehtml",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"single-page build failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    out = repo / "_build" / "singlehtml"
    root = yaml.safe_load((repo / "_toc.yml").read_text(encoding="utf-8"))["root"]
    page = out / "rl-circuitry-print.html"
    shutil.copyfile(out / f"{root}.html", page)
    return page


def print_pdf(page: Path, pdf: Path, browser: str, timeout: float = 300.0) -> Path:
    """Print ``page`` to ``pdf`` with headless Chromium (A4/Letter per the browser's default)."""
    pdf.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rl-pdf-profile-") as profile:
        cmd = [
            browser,
            *PRINT_FLAGS,
            f"--user-data-dir={profile}",
            f"--print-to-pdf={pdf}",
            page.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode or not pdf.is_file() or pdf.stat().st_size == 0:
        raise RuntimeError(f"Chromium could not print {page}: {proc.stderr[-2000:]}")
    return pdf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.book.pdf", description=__doc__)
    root = layout().root
    parser.add_argument("--out", type=Path, default=root / "_build" / "html" / PDF_NAME)
    parser.add_argument("--strict", action="store_true", help="fail when Chromium is missing")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        print(f"[pdf] skipped: no headless Chromium ({INSTALL_HINT})", file=sys.stderr)
        return 1 if args.strict else 0
    pdf = print_pdf(build_single_page(), args.out, browser)
    print(
        f"[pdf] {pdf.relative_to(root) if root in pdf.parents else pdf} "
        f"({pdf.stat().st_size / 1e6:.1f} MB)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
