"""Shared test settings: deterministic, single-threaded torch so tests behave the same everywhere."""

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True, warn_only=True)
