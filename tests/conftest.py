"""Shared test settings: deterministic, single-threaded torch, and no model-hub access."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests use models and data the project makes itself
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)
