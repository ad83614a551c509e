"""Committed weights as float16 deltas: each post-trained model is stored as the XOR of its float16
bit patterns with its parent's, lzma-compressed.

Post-training moves weights by a few float16 ulps, so most XOR words have only low bits set and
compress several-fold; decoding is exact (XOR is its own inverse), so a loaded model is bit-for-bit
the float16 model that was evaluated. The root of the chain (the pretrained model) is a plain
safetensors file.
"""

from __future__ import annotations

import hashlib
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


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the float16 bit patterns of a state, tensor by tensor in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode() + b"\0" + _bits(state[name]).tobytes())
    return digest.hexdigest()


def write_delta(path: Path, state: dict[str, torch.Tensor], parent: dict[str, torch.Tensor]) -> int:
    """Write ``state`` as a delta on ``parent`` into folder ``path``; returns the compressed bytes.

    The index records the parent's hash, so the folder's files identify its weights (the caches key
    on them) and a delta read against another parent fails instead of decoding garbage."""
    blob, index = encode_delta(state, parent)
    (path / DELTA_FILE).write_bytes(blob)
    record = {"parent_sha256": state_sha256(parent), "tensors": index}
    (path / DELTA_INDEX).write_text(json.dumps(record))
    return len(blob)


def read_delta(path: Path, parent: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float16 state stored as a delta in folder ``path``."""
    record = json.loads((path / DELTA_INDEX).read_text())
    if record["parent_sha256"] != state_sha256(parent):
        raise ValueError(
            f"{path}: its parent's weights are not the ones it was encoded against; publish the "
            "set again (python -m helpers.organisms.publish) rather than replacing one folder"
        )
    return decode_delta((path / DELTA_FILE).read_bytes(), record["tensors"], parent)


def is_delta(path: Path) -> bool:
    """Whether folder ``path`` stores its weights as a delta on a parent."""
    return (path / DELTA_FILE).is_file()
