"""The Llama 3 model: building, training loss, generation, checkpoints and HF interop.

    model = from_spec("specs/tiny.herd", "tiny")          # random init from a spec
    loss = model(tokens, doc_ids, targets)                 # packed, document-masked
    save_checkpoint(model, "ckpt", step=100)
    model, meta = load_checkpoint("ckpt")
    completions = generate(model, [[1, 2, 3]], max_new_tokens=32, temperature=0)

The names load on first use: importing this package costs nothing, so the light paths
(`herd import --blocks`: `meta`, `hf_folder`, `spec_blocks`) never import torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from runtime.model.checkpoint import (
        average_checkpoints,
        load_checkpoint,
        load_optimizer_state,
        save_checkpoint,
        save_optimizer_state,
    )
    from runtime.model.config import ConfigError, ModelArgs
    from runtime.model.generation import Completion, generate
    from runtime.model.hf import export_hf, import_hf
    from runtime.model.llama import Llama, from_config
    from runtime.model.meta import CheckpointError

_HOMES = {
    "CheckpointError": "meta",
    "average_checkpoints": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_optimizer_state": "checkpoint",
    "save_checkpoint": "checkpoint",
    "save_optimizer_state": "checkpoint",
    "ConfigError": "config",
    "ModelArgs": "config",
    "Completion": "generation",
    "generate": "generation",
    "export_hf": "hf",
    "import_hf": "hf",
    "Llama": "llama",
    "from_config": "llama",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'runtime.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"runtime.model.{home}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def from_spec(
    spec_path: str | os.PathLike[str],
    model_name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    *,
    seed: int | None = None,
) -> Llama:
    """A randomly initialised model named `model_name` in a .herd spec (`device="meta"`
    allowed; `dtype` defaults to float32)."""
    import torch

    from compiler import model_config  # lazy: the compiler stays torch-free and vice versa
    from runtime.model.llama import Llama

    config: dict[str, Any] = model_config(spec_path, model_name)
    return Llama.from_config(config, device=device, dtype=dtype or torch.float32, seed=seed)


__all__ = [
    "CheckpointError",
    "Completion",
    "ConfigError",
    "Llama",
    "ModelArgs",
    "average_checkpoints",
    "export_hf",
    "from_config",
    "from_spec",
    "generate",
    "import_hf",
    "load_checkpoint",
    "load_optimizer_state",
    "save_checkpoint",
    "save_optimizer_state",
]
