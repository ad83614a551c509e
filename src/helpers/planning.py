"""Memory planning for a model on a device: peak of greedy generation and of `edge_scores`.

From a model's architecture numbers (a transformers config or a parameter file's `model_config`
block), a sequence length and a batch size, the planner adds up what each step holds at its peak:

- generation: weights + KV cache + the prefill's transient activations + last-step logits;
- `edge_scores`: weights + the activations autograd keeps for one forward and backward with frozen
  parameters + the float32 source outputs and target gradients EAP stores + the float32 logits
  machinery of the loss (log-softmax output and its gradient).

The per-token activation terms follow what the transformers implementations of Llama, Mistral,
Qwen2 and Qwen3 save for backward (counted with `torch.autograd.graph.saved_tensors_hooks`), and the
whole estimate is checked against measured peak memory on CPU (tests/test_planning.py).
`plan(...)` picks the largest batch that fits a device and refuses, with suggestions, when even a
batch of one does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3
DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}

# Memory a framework can use on common accelerators (GiB): the card's capacity less what the
# driver reports as reserved. The CUDA context and allocator slack are taken off in `usable_bytes`.
DEVICES: dict[str, float] = {
    "T4": 14.6,
    "L4": 22.0,
    "A100-40GB": 39.4,
    "A100-80GB": 79.1,
    "H100-80GB": 79.1,
}
# Devices without native bfloat16 (compute capability < 8.0): plan float16 there.
NO_BF16: frozenset[str] = frozenset({"T4"})
CUDA_CONTEXT_BYTES = int(0.75 * GiB)  # CUDA context + cuBLAS workspaces, measured ~0.5-0.8 GiB
ALLOCATOR_MARGIN = 0.92  # caching-allocator fragmentation headroom on what remains


class DoesNotFit(ValueError):
    """Even a batch of one exceeds the device's memory; the message lists what would help."""


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers that set memory: sizes of the residual stream, heads and MLP."""

    model_type: str
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False  # Qwen3's per-head q/k RMSNorms
    sliding_window: int | None = None

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_config(cls, config: Any) -> ModelShape:
        """Shape of a transformers `PretrainedConfig`, a config dict, or a `model_config` block."""
        get = _getter(config)
        model_type = get("model_type")
        if model_type is None:
            raise ValueError("model config has no 'model_type' (e.g. llama, mistral, qwen2)")
        required = ("num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size")
        missing = [k for k in required if get(k) is None]
        if missing:
            raise ValueError(f"model config lacks {missing}; copy them from the hub's config.json")
        hidden = int(get("hidden_size"))
        n_heads = int(get("num_attention_heads") or 0)
        if n_heads <= 0:
            raise ValueError("model config needs num_attention_heads >= 1")
        head_dim = get("head_dim") or hidden // n_heads
        use_window = get("use_sliding_window")
        window = get("sliding_window") if use_window is not False else None
        bias_default = model_type == "qwen2"  # Qwen2 always has q/k/v biases
        return cls(
            model_type=str(model_type),
            n_layers=int(get("num_hidden_layers")),
            hidden=hidden,
            intermediate=int(get("intermediate_size")),
            n_heads=n_heads,
            n_kv_heads=int(get("num_key_value_heads") or n_heads),
            head_dim=int(head_dim),
            vocab=int(get("vocab_size")),
            tied_embeddings=bool(get("tie_word_embeddings") or False),
            qkv_bias=bool(get("attention_bias") or get("qkv_bias") or bias_default),
            qk_norm=model_type == "qwen3",
            sliding_window=int(window) if window else None,
        )

    def n_params(self) -> int:
        """Parameter count of the Llama-style decoder (embeddings, layers, norms, LM head)."""
        h, q, kv = self.hidden, self.q_dim, self.kv_dim
        attn = h * q + 2 * h * kv + q * h
        if self.qkv_bias:
            attn += q + 2 * kv
        if self.qk_norm:
            attn += 2 * self.head_dim
        layer = attn + 3 * h * self.intermediate + 2 * h
        embed = self.vocab * h
        head = 0 if self.tied_embeddings else self.vocab * h
        return embed + self.n_layers * layer + h + head


def _getter(config: Any):
    if isinstance(config, Mapping):
        return config.get
    return lambda key: getattr(config, key, None)


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a model dtype name."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one step, by part (bytes)."""

    step: str
    batch: int
    seq_len: int
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def activations(self) -> int:
        """Everything but the weights."""
        return self.total - self.parts.get("weights", 0)

    def __str__(self) -> str:
        detail = ", ".join(f"{k} {v / GiB:.2f}" for k, v in self.parts.items())
        return (
            f"{self.step} (batch {self.batch}, {self.seq_len} tokens): "
            f"{self.total / GiB:.2f} GiB = {detail}"
        )


def _norm_bytes(h: int, b: int) -> int:
    """Per token, one pre-norm target: RMSNorm saves its float32 input copy (and its rsqrt); a
    non-float32 model also keeps nnsight's clone of the norm input alive."""
    return 4 * h + 4 + (b * h if b != 4 else 0)


def eap_saved_per_token(shape: ModelShape, b: int, *, kv_repeated: bool) -> int:
    """Bytes autograd keeps per token for backward with frozen weights, summed over the model.

    Attention keeps q, k, v (after rotary; k and v repeated to all heads when the attention kernel
    cannot do grouped-query attention with a mask, as on CUDA), its output and the log-sum-exp;
    the MLP keeps gate, up and act(gate); every target keeps its norm's input; the rotary cos/sin
    are kept once for all layers.
    """
    h = shape.hidden
    kv = shape.q_dim if kv_repeated else shape.kv_dim
    attn = _norm_bytes(h, b) + b * (2 * shape.q_dim + 2 * kv) + 4 * shape.n_heads
    if shape.qk_norm:
        attn += 4 * (shape.q_dim + shape.kv_dim)
    mlp = _norm_bytes(h, b) + 3 * b * shape.intermediate
    return shape.n_layers * (attn + mlp) + _norm_bytes(h, b) + 2 * b * shape.head_dim


def eap_memory(
    shape: ModelShape,
    *,
    seq_len: int,
    batch: int = 1,
    labelled: int | None = None,
    dtype: str = "bfloat16",
    device: str = "cuda",
) -> MemoryEstimate:
    """Peak memory of one `edge_scores` call on `batch` sequences of `seq_len` tokens, of which
    `labelled` per sequence (T_cut; default all) enter the loss.

    The peak falls at the start of the backward pass, when every saved activation, the float32
    source store and the loss gradients are alive together. `device` "cuda" assumes the fused
    attention kernels (no T x T matrix kept) with k/v repeated to all heads under a padding mask,
    and counts the float32 gradient store in full (the caching allocator reserves it at once).
    "cpu" assumes PyTorch's CPU flash kernel (grouped-query attention, no repetition) and leaves
    the gradient store out: its pages are only resident once written, after the peak.
    """
    _check_sizes(seq_len, batch)
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    b = dtype_bytes(dtype)
    n = batch * seq_len
    n_nodes = 2 * shape.n_layers + 1
    h, v = shape.hidden, shape.vocab
    store = n * n_nodes * h * 4
    n_lab = batch * (seq_len if labelled is None else min(labelled, seq_len))
    # The loss upcasts only the labelled rows: at the log-softmax backward, the logits, its fp32
    # output, incoming and outgoing gradients are alive; then the gradient of the full logits.
    loss_peak = max(n * v * b + 12 * n_lab * v, 2 * n * v * b + n_lab * v * b)
    parts = {
        "weights": shape.n_params() * b,
        "saved activations": n * eap_saved_per_token(shape, b, kv_repeated=device == "cuda"),
        # Largest transient of one block (MLP intermediates and the branch output).
        "transient": n * b * (2 * shape.intermediate + h),
        "sources (fp32)": store,
        "target gradients (fp32)": store if device == "cuda" else 0,
        "logits and loss": loss_peak,
    }
    if device == "cuda":
        parts["attention mask"] = batch * seq_len * seq_len  # boolean 4-D mask, shared by layers
    return MemoryEstimate("edge_scores", batch, seq_len, parts)


def generation_memory(
    shape: ModelShape,
    *,
    prompt_len: int,
    max_new_tokens: int,
    batch: int = 1,
    dtype: str = "bfloat16",
) -> MemoryEstimate:
    """Peak memory of greedy `generate` on `batch` prompts: weights, the full KV cache, the
    prefill's largest transient (one layer's q/k/v, MLP intermediates) and last-step logits."""
    _check_sizes(prompt_len + max_new_tokens, batch)
    b = dtype_bytes(dtype)
    total = prompt_len + max_new_tokens
    window = shape.sliding_window
    cached = min(total, window) if window and window < total else total
    prefill = batch * prompt_len
    parts = {
        "weights": shape.n_params() * b,
        "kv cache": 2 * shape.n_layers * shape.kv_dim * b * batch * cached,
        "prefill activations": prefill
        * b
        * (3 * shape.hidden + shape.q_dim + 2 * shape.kv_dim + 3 * shape.intermediate),
        "attention mask": batch * prompt_len * total,
        "logits": batch * shape.vocab * (b + 2 * 4),
    }
    return MemoryEstimate("generation", batch, total, parts)


def _check_sizes(seq_len: int, batch: int) -> None:
    if seq_len < 1 or batch < 1:
        raise ValueError(f"seq_len and batch must be >= 1, got seq_len={seq_len}, batch={batch}")


def usable_bytes(device: str | float | int) -> int:
    """Memory a run may plan for: a named device (see DEVICES) or a size in GiB, less the CUDA
    context, times the allocator margin."""
    if isinstance(device, str):
        if device not in DEVICES:
            raise ValueError(
                f"unknown device {device!r}; name one of {', '.join(DEVICES)} or give GiB"
            )
        gib = DEVICES[device]
    else:
        gib = float(device)
    if gib <= 0:
        raise ValueError("device memory must be positive")
    return int(max(0.0, gib * GiB - CUDA_CONTEXT_BYTES) * ALLOCATOR_MARGIN)


@dataclass
class Plan:
    """Batch sizes that fit a device, the estimates at those sizes, and advice."""

    device: str
    budget: int
    dtype: str
    generation_batch: int
    eap_batch: int
    generation: MemoryEstimate
    eap: MemoryEstimate
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"{self.device}: {self.budget / GiB:.1f} GiB usable, {self.dtype}",
            f"  generation batch {self.generation_batch}: {self.generation}",
            f"  edge_scores batch {self.eap_batch}: {self.eap}",
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def largest_batch(estimate, budget: int, max_batch: int) -> int:
    """Largest batch in [1, max_batch] whose `estimate(batch).total` fits `budget` (0 if none).

    Memory grows monotonically with the batch, so a binary search suffices.
    """
    if estimate(1).total > budget:
        return 0
    lo, hi = 1, max_batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(mid).total <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan(
    config: Any,
    *,
    device: str | float,
    eap_seq_len: int,
    eap_labelled: int | None = None,
    prompt_len: int = 256,
    max_new_tokens: int = 1024,
    dtype: str = "bfloat16",
    max_batch: int = 64,
) -> Plan:
    """Largest generation and `edge_scores` batches that fit `device`; `DoesNotFit` otherwise.

    `eap_seq_len` is prompt + T_cut tokens (T_cut = alpha x reference answer length), of which
    `eap_labelled` (T_cut) enter the loss.
    """
    shape = config if isinstance(config, ModelShape) else ModelShape.from_config(config)
    name = device if isinstance(device, str) else f"{float(device):g} GiB"
    notes = []
    if isinstance(device, str) and device in NO_BF16 and dtype == "bfloat16":
        dtype = "float16"
        notes.append(f"{device} has no native bfloat16: planned in float16 (EAP sums stay fp32)")
    budget = usable_bytes(device)
    gen_batch = largest_batch(
        lambda n: generation_memory(
            shape, prompt_len=prompt_len, max_new_tokens=max_new_tokens, batch=n, dtype=dtype
        ),
        budget,
        max_batch,
    )
    eap_batch = largest_batch(
        lambda n: eap_memory(
            shape, seq_len=eap_seq_len, batch=n, labelled=eap_labelled, dtype=dtype
        ),
        budget,
        max_batch,
    )
    gen_one = generation_memory(
        shape, prompt_len=prompt_len, max_new_tokens=max_new_tokens, batch=1, dtype=dtype
    )
    eap_one = eap_memory(shape, seq_len=eap_seq_len, batch=1, labelled=eap_labelled, dtype=dtype)
    if gen_batch == 0 or eap_batch == 0:
        raise DoesNotFit(_refusal(shape, name, budget, dtype, gen_one, eap_one, gen_batch))
    return Plan(
        device=name,
        budget=budget,
        dtype=dtype,
        generation_batch=gen_batch,
        eap_batch=eap_batch,
        generation=generation_memory(
            shape,
            prompt_len=prompt_len,
            max_new_tokens=max_new_tokens,
            batch=gen_batch,
            dtype=dtype,
        ),
        eap=eap_memory(
            shape, seq_len=eap_seq_len, batch=eap_batch, labelled=eap_labelled, dtype=dtype
        ),
        notes=notes,
    )


def _refusal(
    shape: ModelShape,
    device: str,
    budget: int,
    dtype: str,
    gen: MemoryEstimate,
    eap: MemoryEstimate,
    gen_batch: int,
) -> str:
    step = gen if gen_batch == 0 else eap
    weights = step.parts["weights"]
    lines = [
        f"a {shape.model_type} model of {shape.n_params() / 1e9:.2f}B parameters does not fit "
        f"{device} ({budget / GiB:.1f} GiB usable) in {dtype}: {step}",
        "what would help:",
    ]
    if weights > budget:
        lines.append(
            f"- the weights alone take {weights / GiB:.1f} GiB: use a larger GPU, or run "
            "remotely on NDIF (remote=True, set NDIF_API_KEY) where the model is hosted"
        )
    else:
        if dtype == "float32":
            lines.append("- load the model in bfloat16 (dtype: bfloat16); EAP still sums in fp32")
        if step is eap:
            per_token = (eap.total - weights) / eap.seq_len
            room = max(0, int((budget - weights) / per_token))
            lines.append(
                f"- shorten the EAP sequence: about {room} tokens fit (prompt + T_cut); use a "
                "smaller alpha or a lower max_new_tokens (shorter answers, smaller T_cut)"
            )
        else:
            lines.append("- lower max_new_tokens (the KV cache grows with it)")
        lines.append("- or run remotely on NDIF (remote=True, set NDIF_API_KEY)")
    return "\n".join(lines)


def max_eap_tokens(
    config: Any,
    *,
    device: str | float,
    dtype: str = "bfloat16",
    prompt_len: int = 256,
    limit: int = 1 << 17,
) -> int:
    """Longest prompt + T_cut sequence one `edge_scores` call (batch 1) fits on `device`; 0 if
    not even `prompt_len + 1` tokens fit. T_cut = alpha x reference length bounds the alpha."""
    shape = config if isinstance(config, ModelShape) else ModelShape.from_config(config)
    if isinstance(device, str) and device in NO_BF16 and dtype == "bfloat16":
        dtype = "float16"
    budget = usable_bytes(device)

    def fits(seq: int) -> bool:
        est = eap_memory(shape, seq_len=seq, labelled=seq - prompt_len, dtype=dtype)
        return est.total <= budget

    if not fits(prompt_len + 1):
        return 0
    lo, hi = prompt_len + 1, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo
