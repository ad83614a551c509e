"""Parquet cache of generations: one file per (model, weights, dataset, template, settings) key.

Layout under the cache folder (default `<repo>/data/generations/`, git-ignored):
`<stem>.parquet` (compacted rows), `<stem>.parts/part-*.parquet` (one per finished batch, written
while a run is in progress) and `<stem>.json` (the key's fields, for provenance). Every file is
written atomically (`helpers.io`), so a crash leaves either the old file or the new one. Reading merges the main file and the parts (later rows win for an id), so
an interrupted run loses only the batch in flight; `compact` folds the parts into the main file.
`evaluate_model` keeps grades beside them, in `<stem>.grades-<grader version>.parquet`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

from helpers import io
from helpers.cache_repair import read_or_none
from helpers.paths import layout

CACHE_FORMAT_VERSION = 1
COLUMNS: tuple[str, ...] = ("id", "prompt_ids", "answer_ids", "finished")
# *.delta.*: weights stored as a delta on a parent whose hash the delta index records
WEIGHT_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.delta.xz",
    "*.delta.json",
    "config.json",
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (`helpers.io.write_bytes`)."""
    io.write_bytes(path, data)


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as Parquet atomically."""
    io.atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def default_cache_dir() -> Path:
    """The generation cache of the current layout (`helpers.paths`)."""
    return layout().generations


def _sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_fingerprint(model_dir: str | Path, *, memo_path: Path | None = None) -> str:
    """SHA-256 over the content of a model folder's weight files and config.json.

    Each file's hash is memoised in `memo_path` (JSON) under (absolute path, size, mtime_ns), so a
    re-run does not re-read unchanged multi-GB weights; the content, not the mtime, is keyed.
    """
    model_dir = Path(model_dir).resolve()
    files = sorted(
        {p for pattern in WEIGHT_PATTERNS for p in model_dir.glob(pattern) if p.is_file()}
    )
    if not any(p.name != "config.json" for p in files):
        raise ValueError(f"no weight files ({', '.join(WEIGHT_PATTERNS)}) in {model_dir}")
    memo: dict[str, str] = {}
    if memo_path is not None and memo_path.exists():
        memo = json.loads(memo_path.read_text())
    changed = False
    total = hashlib.sha256()
    for path in files:
        stat = path.stat()
        memo_key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        if memo_key not in memo:
            memo[memo_key] = _sha256_file(path)
            changed = True
        total.update(f"{path.name}:{memo[memo_key]}\n".encode())
    if changed and memo_path is not None:
        atomic_write_bytes(memo_path, json.dumps(memo, indent=1, sort_keys=True).encode())
    return total.hexdigest()


def state_dict_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over parameter and buffer names, dtypes, shapes and bytes of an in-memory model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def model_fingerprint(
    model: torch.nn.Module | str | Path,
    *,
    revision: str | None = None,
    memo_path: Path | None = None,
) -> str:
    """Identity of the weights: content hash of a local folder, `id@revision` for a hub model,
    `id@commit` for a model loaded from the hub, or a hash of an in-memory model's tensors."""
    if isinstance(model, (str, Path)):
        if Path(model).is_dir():
            return "sha256:" + weights_fingerprint(model, memo_path=memo_path)
        if revision is None:
            warnings.warn(
                f"no revision given for hub model {model!r}; the cache key uses 'main', "
                "which moves. Pass revision=<commit sha> to pin it.",
                stacklevel=2,
            )
        return f"{model}@{revision or 'main'}"
    name = str(getattr(model, "name_or_path", "") or "")
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if name and Path(name).is_dir():
        return "sha256:" + weights_fingerprint(name, memo_path=memo_path)
    if name and commit:
        return f"{name}@{commit}"
    return "state:" + state_dict_fingerprint(model)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of a tokenizer's full serialisation (fast tokenizers), specials and chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        body = backend.to_str()
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps(
        [
            sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items()),
            getattr(tokenizer, "chat_template", None),
            type(tokenizer).__name__,
        ]
    )
    return hashlib.sha256((body + extra).encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything that changes the generated tokens. Batch size is left out: greedy outputs are
    batch-invariant in float32 (tested); in bf16 on a GPU they may differ at near-ties."""

    model: str
    model_fingerprint: str
    tokenizer_fingerprint: str
    dataset: str
    template: str
    max_new_tokens: int
    dtype: str
    stop_token_ids: tuple[int, ...]
    backend: str
    format_version: int = CACHE_FORMAT_VERSION

    def digest(self) -> str:
        """Short hash of all fields."""
        payload = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def stem(self) -> str:
        """File stem: readable model/dataset/template slug plus the digest."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(self.model).name or self.model).strip("-")
        return f"{slug}__{self.dataset}__{self.template}__{self.digest()}"


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    out = df.loc[:, list(COLUMNS)].copy()
    out["id"] = out["id"].astype(str)
    out["prompt_ids"] = [list(map(int, v)) for v in out["prompt_ids"]]
    out["answer_ids"] = [list(map(int, v)) for v in out["answer_ids"]]
    out["finished"] = out["finished"].astype(bool)
    return out


class GenerationCache:
    """The Parquet store of one cache key: read, append a batch, compact."""

    def __init__(self, key: CacheKey, cache_dir: str | Path | None = None) -> None:
        self.key = key
        self.dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        stem = key.stem()
        self.path = self.dir / f"{stem}.parquet"
        self.parts_dir = self.dir / f"{stem}.parts"
        self.sidecar = self.dir / f"{stem}.json"
        self._last_stamp = 0

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob("part-*.parquet")) if self.parts_dir.exists() else []

    def _read(self, parts: list[Path]) -> pd.DataFrame:
        files = ([self.path] if self.path.exists() else []) + parts
        read = (read_or_none(f, lambda f: _normalise(pd.read_parquet(f))) for f in files)
        frames = [frame for frame in read if frame is not None]  # a corrupt file is recomputed
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
        rows = pd.concat(frames, ignore_index=True)
        return rows.drop_duplicates("id", keep="last").reset_index(drop=True)

    def load(self) -> pd.DataFrame:
        """All cached rows (main file and parts), one per id, the latest write winning."""
        return self._read(self._parts())

    def write_sidecar(self, extra: dict[str, Any] | None = None) -> None:
        """JSON with the key's fields (and `extra`) next to the Parquet file."""
        payload = {**dataclasses.asdict(self.key), "digest": self.key.digest(), **(extra or {})}
        atomic_write_bytes(self.sidecar, json.dumps(payload, indent=2, sort_keys=True).encode())

    def append(self, rows: pd.DataFrame) -> Path:
        """Persist one batch of rows as a new part file (atomic)."""
        # Names sort by write time, so on read a later part wins for an id.
        stamp = max(time.time_ns(), max(self._last_stamp, 0) + 1)
        self._last_stamp = stamp
        part = self.parts_dir / f"part-{stamp:020d}-{uuid.uuid4().hex[:8]}.parquet"
        atomic_write_parquet(_normalise(rows), part)
        return part

    def compact(self) -> pd.DataFrame:
        """Fold the parts into the main file (atomic), then delete them; returns all rows.

        Only the parts listed before reading are folded and deleted, so a part another process
        writes meanwhile survives for the next compaction.
        """
        parts = self._parts()
        rows = self._read(parts)
        if parts or not self.path.exists():
            atomic_write_parquet(rows, self.path)
            for part in parts:
                part.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty: another writer's part arrived
                self.parts_dir.rmdir()
        return rows
