"""Committed weights as float16 deltas: each post-trained model is stored as the XOR of its float16
bit patterns with its parent's, lzma-compressed.

Post-training moves weights by a few float16 ulps, so most XOR words have only low bits set and
compress several-fold; decoding is exact (XOR is its own inverse), so a loaded model is bit-for-bit
the float16 model that was evaluated. The root of the chain (the pretrained model) is a plain
safetensors file.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np
import torch

DELTA_FILE = "weights.delta.xz"
DELTA_INDEX = "weights.delta.json"
FULL_FILE = "model.safetensors"


def _bits(tensor: torch.Tensor) -> np.ndarray:
    """The float16 bit patterns of a tensor as a flat uint16 array."""
    return (
        tensor.detach()
        .to(dtype=torch.float16)
        .contiguous()
        .view(torch.int16)
        .numpy()
        .view(np.uint16)
        .ravel()
    )


def encode_delta(
    state: dict[str, torch.Tensor], parent: dict[str, torch.Tensor]
) -> tuple[bytes, dict]:
    """(compressed bytes, index) of ``state`` XOR ``parent`` in float16, tensor by tensor."""
    missing = sorted(set(state) ^ set(parent))
    if missing:
        raise ValueError(
            f"state and parent differ in tensors {missing[:5]}: not the same architecture"
        )
    index, chunks, offset = {}, [], 0
    for name in sorted(state):
        if state[name].shape != parent[name].shape:
            raise ValueError(
                f"{name}: shape {tuple(state[name].shape)} vs parent {tuple(parent[name].shape)}"
            )
        words = _bits(state[name]) ^ _bits(parent[name])
        chunks.append(words.tobytes())
        index[name] = {"shape": list(state[name].shape), "offset": offset, "n": int(words.size)}
        offset += int(words.size)
    return lzma.compress(b"".join(chunks), preset=9 | lzma.PRESET_EXTREME), index


def decode_delta(
    blob: bytes, index: dict, parent: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The float16 state whose XOR with ``parent`` was encoded in ``blob``."""
    words = np.frombuffer(lzma.decompress(blob), dtype=np.uint16)
    out = {}
    for name, info in index.items():
        part = words[info["offset"] : info["offset"] + info["n"]] ^ _bits(parent[name])
        out[name] = (
            torch.from_numpy(part.astype(np.uint16).view(np.int16).copy())
            .view(torch.float16)
            .reshape(info["shape"])
        )
    return out


def write_delta(path: Path, state: dict[str, torch.Tensor], parent: dict[str, torch.Tensor]) -> int:
    """Write ``state`` as a delta on ``parent`` into folder ``path``; returns the compressed bytes."""
    blob, index = encode_delta(state, parent)
    (path / DELTA_FILE).write_bytes(blob)
    (path / DELTA_INDEX).write_text(json.dumps(index))
    return len(blob)


def read_delta(path: Path, parent: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float16 state stored as a delta in folder ``path``."""
    index = json.loads((path / DELTA_INDEX).read_text())
    return decode_delta((path / DELTA_FILE).read_bytes(), index, parent)


def is_delta(path: Path) -> bool:
    """Whether folder ``path`` stores its weights as a delta on a parent."""
    return (path / DELTA_FILE).is_file()
