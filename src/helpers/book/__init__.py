"""How the report reads: cell-tag rules, numbers from the result tables, generated prose and figures.

Applied by the runner (when it writes a page) and by the book build (a Sphinx extension and a
notebook reader in ``_config.yml``), so no page is tagged or typed by hand.
"""
