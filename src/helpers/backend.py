"""Where a model runs: here (`Local`), on NDIF (`NDIF`), or through nnsight's local simulation of
an NDIF request (`SimulatedNDIF`). One object owns what differs between them.

A backend loads a model reference, checks that it can run (the NDIF key, once), gives EAP its
nnsight wrapper and trace arguments, and supplies the `generate` callable of the one generation
loop (`helpers.generation`). Every other module takes a backend (or a loaded model), never a flag.
Model references: `organism:<name>` (or any prefix registered with `register_source`), a local
folder, or a hub id.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from helpers import generation as gen
from helpers import plugins

# prefix -> loader(name, dtype) -> (model, tokenizer); the organisms register "organism:"
ModelSource = Callable[[str, torch.dtype], tuple[Any, Any]]
SOURCES: dict[str, ModelSource] = {}


def register_source(prefix: str, loader: ModelSource) -> None:
    """Let `load` resolve references starting with `prefix` through `loader`."""
    SOURCES[prefix] = loader


def is_local_ref(ref: str) -> bool:
    """Whether `ref` names a model of a registered source or a folder (not a hub id)."""
    import os

    plugins.load()
    return any(ref.startswith(p) for p in SOURCES) or os.path.exists(ref)


def load_local(
    ref: str,
    *,
    revision: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """(model, tokenizer) in memory, on `device` (the GPU when there is one), in eval mode.

    Hub models load from safetensors, at the pinned `revision`, without remote code unless asked.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    plugins.load()
    prefix = next((p for p in SOURCES if ref.startswith(p)), None)
    if prefix is not None:
        model, tokenizer = SOURCES[prefix](ref.removeprefix(prefix), torch_dtype)
    else:
        kwargs = {"revision": revision, "trust_remote_code": trust_remote_code}
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            ref, dtype=torch_dtype, use_safetensors=True, **kwargs
        )
    return model.to(device).eval(), tokenizer


@dataclass(frozen=True)
class Local:
    """Models in this process's memory; traces and generation run here."""

    name: ClassVar[str] = "local"
    remote: ClassVar[bool] = False  # whether the weights live elsewhere

    def load(self, ref: str, **kwargs: Any) -> tuple[Any, Any]:
        """(model, tokenizer) of `ref` (see `load_local` for the keyword arguments)."""
        return load_local(ref, **kwargs)

    def from_name(self, name: str, *, revision: str | None, dtype: str) -> Any:
        """The model of a hub id or folder for generation (weights loaded as stored, no tokenizer)."""
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(
            name, revision=revision, dtype=getattr(torch, dtype)
        )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return loaded.to(device).eval()  # type: ignore[arg-type]  # transformers' stub of .to

    def envoy(self, model: Any) -> Any:
        """The nnsight wrapper EAP traces (the model itself when it already is one)."""
        from nnsight import NNsight
        from nnsight.intervention.envoy import Envoy

        if isinstance(model, Envoy):
            return model
        if isinstance(model, torch.nn.Module):
            return NNsight(model)
        raise TypeError(
            f"model must be a transformers causal LM or an nnsight model, got {type(model).__name__}"
        )

    def check(self, envoy: Any) -> None:
        """Raise, naming the fix, when a trace of `envoy` cannot run on this backend."""

    def trace_kwargs(self) -> dict[str, Any]:
        """Extra arguments of `envoy.trace` (none here)."""
        return {}

    def prepare(self, module: Any) -> None:
        """Make `module`'s code available where the trace runs (nothing to do here)."""

    def input_device(self, model: Any) -> torch.device:
        """Device the inputs of a trace of `model` go to."""
        module = getattr(model, "_module", model)
        return next(module.parameters()).device

    def generate_fn(self, model: Any) -> gen.GenerateFn:
        """The `generate` callable of `helpers.generation.generate_tokens` for `model`."""
        return gen.local_generate(getattr(model, "_module", model))

    def greedy(
        self, model: Any, prompts: Sequence[Sequence[int]], **kwargs: Any
    ) -> list[gen.Generation]:
        """Greedy records of `model` (see `helpers.generation.greedy_answers`)."""
        return gen.greedy_answers(self.generate_fn(model), prompts, **kwargs)


@dataclass(frozen=True)
class NDIF(Local):
    """Models hosted by NDIF: only the config is loaded here; traces and generation run there."""

    name: ClassVar[str] = "ndif"
    remote: ClassVar[bool] = True

    def trace_flag(self) -> Any:
        return True

    def load(self, ref: str, *, revision: str | None = None, **_: Any) -> tuple[Any, Any]:
        """(nnsight model of the hub id, its tokenizer); the key is checked before any download."""
        from transformers import AutoTokenizer

        from helpers.remote import api_key, remote_model

        if is_local_ref(ref):
            raise ValueError(
                f"{ref!r} is a local model; NDIF runs hub models only ('<org>/<name>')"
            )
        api_key()
        tokenizer = AutoTokenizer.from_pretrained(ref, revision=revision)
        return remote_model(ref, revision=revision), tokenizer

    def from_name(self, name: str, *, revision: str | None, dtype: str) -> Any:
        """nnsight's wrapper of the hub model (its config only; the weights stay on NDIF)."""
        from helpers import remote

        return remote.remote_model(name, revision=revision)

    def envoy(self, model: Any) -> Any:
        if not hasattr(model, "_remote_backend"):
            raise ValueError(
                f"the {self.name} backend needs an nnsight model that NDIF can host, e.g. "
                "backend.load('<hub repo id>'); a plain transformers model runs locally only"
            )
        return model

    def check(self, envoy: Any) -> None:
        """The key, checked once (`helpers.remote.api_key`), handed to nnsight's requests."""
        from nnsight.schema.config import CONFIG

        from helpers.remote import api_key

        key = api_key()
        if not CONFIG.API.APIKEY:
            CONFIG.API.APIKEY = key  # set in the environment after nnsight was imported

    def trace_kwargs(self) -> dict[str, Any]:
        return {"remote": self.trace_flag()}

    def prepare(self, module: Any) -> None:
        import nnsight

        nnsight.register(module)  # ship the module's code by value, as a remote request does

    def input_device(self, model: Any) -> torch.device:
        return torch.device("cpu")

    def generate_fn(self, model: Any) -> gen.GenerateFn:
        envoy = self.envoy(model)
        flag = self.trace_flag()

        def run(ids: torch.Tensor, mask: torch.Tensor, config: Any) -> torch.Tensor:
            with envoy.generate(
                input_ids=ids, attention_mask=mask, generation_config=config, remote=flag
            ) as tracer:
                out = tracer.result.save()
            return out

        return run


@dataclass(frozen=True)
class SimulatedNDIF(NDIF):
    """A local model run through nnsight's simulation of an NDIF request: serialised, local
    modules hidden, deserialised, then run here. Needs no key; checks what NDIF would refuse."""

    name: ClassVar[str] = "ndif-local"
    remote: ClassVar[bool] = False

    def trace_flag(self) -> Any:
        return "local"

    def from_name(self, name: str, *, revision: str | None, dtype: str) -> Any:
        raise ValueError(
            "the ndif-local backend needs the model with its tokenizer: pass backend.load(ref)[0]"
        )

    def load(self, ref: str, **kwargs: Any) -> tuple[Any, Any]:
        model, tokenizer = load_local(ref, **kwargs)
        return self.wrap(model, tokenizer), tokenizer

    def wrap(self, model: torch.nn.Module, tokenizer: Any) -> Any:
        """The nnsight wrapper of a local `model` whose traces go through the simulation."""
        from nnsight.modeling.transformers import TransformersModel

        return TransformersModel(model, tokenizer=tokenizer)

    def envoy(self, model: Any) -> Any:
        if not hasattr(model, "_remote_backend"):
            raise ValueError(
                "the ndif-local backend needs the model wrapped with its tokenizer (nnsight's "
                "wrapper needs one): backend.wrap(model, tokenizer) or backend.load(ref)"
            )
        return model

    def check(self, envoy: Any) -> None:
        """No key needed: the request never leaves this machine."""

    def input_device(self, model: Any) -> torch.device:
        return Local().input_device(model)


BACKENDS: dict[str, Callable[[], Local]] = {
    "local": Local,
    "ndif": NDIF,
    "ndif-local": SimulatedNDIF,
}


@functools.cache
def get_backend(name: str | bool = "local") -> Local:
    """Backend by name ('local', 'ndif', 'ndif-local'); True/False for a notebook's `remote` flag."""
    if isinstance(name, bool):
        name = "ndif" if name else "local"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name]()


LOCAL = Local()
