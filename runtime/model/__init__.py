"""The Llama 3 model: building, training loss, generation, checkpoints and HF interop.

    model = from_spec("specs/tiny.herd", "tiny")          # random init from a spec
    loss = model(tokens, doc_ids, targets)                 # packed, document-masked
    save_checkpoint(model, "ckpt", step=100)
    model, meta = load_checkpoint("ckpt")
    completions = generate(model, [[1, 2, 3]], max_new_tokens=32, temperature=0)
"""

from __future__ import annotations

import os
from typing import Any

import torch

from runtime.model.checkpoint import (
    CheckpointError,
    average_checkpoints,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
    save_optimizer_state,
)
from runtime.model.config import ConfigError, ModelArgs
from runtime.model.generate import Completion, generate
from runtime.model.hf import export_hf, import_hf
from runtime.model.llama import Llama, from_config


def from_spec(
    spec_path: str | os.PathLike[str],
    model_name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    seed: int | None = None,
) -> Llama:
    """A randomly initialised model named `model_name` in a .herd spec (`device="meta"` allowed)."""
    from compiler import model_config  # lazy: the compiler stays torch-free and vice versa

    config: dict[str, Any] = model_config(spec_path, model_name)
    return Llama.from_config(config, device=device, dtype=dtype, seed=seed)


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
