"""Find numbers typed by hand in prose: what is left once roles, code, math and names are removed.

A prose number should come from the tables (a ``{num}`` role, ``{glue}`` or generated text). What
remains after stripping those, code, math, links, citations and numbered names ("Table 1", "7B",
"pass@8", "Qwen2.5") is a number someone typed, and it will drift from the data.
"""

from __future__ import annotations

import re

# Removed before looking: fenced blocks, directive options, roles, inline code, math, links' targets,
# HTML tags, footnote/label syntax.
_STRIP = [
    re.compile(r"^(```|:::).*?^\1\s*$", re.S | re.M),  # fenced code / directives with a body
    re.compile(r"^:[\w-]+:.*$", re.M),  # directive options
    re.compile(r"\{[\w:-]+\}`[^`]*`"),  # roles: {num}`...`, {cite:p}`...`, {doc}`...`
    re.compile(r"`[^`]*`"),  # inline code
    re.compile(r"\$\$.*?\$\$", re.S),  # display math
    re.compile(r"\$[^$]+?\$"),  # inline math (may wrap a line)
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<[^>]+>"),  # HTML tags
    re.compile(r"^\(\w[\w-]*\)=\s*$", re.M),  # MyST labels
    re.compile(r"^\s*\d+\.\s", re.M),  # ordered-list markers
]
# Numbers that are names, not measurements.
NAMED = re.compile(
    r"\b(Table|Figure|Section|Chapter|issue|step|Jupyter Book|arXiv|version|Python)\s+[\d.:]+"
    r"|\b95\s?% (bootstrap )?(confidence )?interval",
    re.I,
)
NUMBER = re.compile(r"(?<![\w@.\-/])[\u2212+-]?\d+(?:[.,]\d+)*(?:\s?%)?(?![\w@/])")


def strip_markup(text: str) -> str:
    """Prose with roles, code, math, links and tags removed (their numbers are not typed prose)."""
    for pattern in _STRIP:
        text = pattern.sub(" ", text)
    return NAMED.sub(" ", text)


def typed_numbers(text: str) -> list[str]:
    """The numbers in MyST ``text`` that no role, code span, math or name accounts for."""
    lines = [ln for ln in strip_markup(text).splitlines() if not ln.lstrip().startswith("#")]
    return [m.group(0) for m in NUMBER.finditer("\n".join(lines))]
