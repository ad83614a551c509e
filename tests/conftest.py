"""Shared test settings: deterministic, single-threaded torch, and no model-hub access."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests use models and data the project makes itself
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)

import pytest  # noqa: E402

# Test tiers: files of pure-function tests are `unit`; everything else not marked `slow` is
# `integration`. `make test-unit` runs the first, `make test-fast` both, `make test` all three.
UNIT_FILES = frozenset(
    {
        "test_graph.py",
        "test_metrics.py",
        "test_stats.py",
        "test_evaluation_data.py",
        "test_organisms_tasks.py",
        "test_organisms_tokenizer.py",
        "test_specs.py",
        "test_paths_io.py",
        "test_tables.py",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test `unit` or `integration` by its file, unless it is already `slow`."""
    for item in items:
        if item.get_closest_marker("slow"):
            continue
        tier = "unit" if item.path.name in UNIT_FILES else "integration"
        item.add_marker(getattr(pytest.mark, tier))
