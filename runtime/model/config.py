"""The model config: the compiler's plain dict, read into a typed, validated record.

The compiler emits a JSON-able dict (plan["models"][name], a training job's
config["model"]). The model keeps that dict verbatim for checkpoints and reads the fields
it needs through `ModelArgs`, tolerating keys it does not use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from herdlang.errors import UserError


class ConfigError(UserError, ValueError):
    """A model config that cannot describe a Llama model (missing or inconsistent keys)."""


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3.1 frequency scaling: long wavelengths slowed by `factor`, short ones kept."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_context: int


@dataclass(frozen=True)
class ModelArgs:
    """The fields of a model config that decide shapes and numerics."""

    vocab_size: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    rope_scaling: RopeScaling | None = None
    tied_embeddings: bool = False
    max_context: int = 8192
    document_mask: bool = True
    init_std: float = 0.02

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> ModelArgs:
        """Read and check a compiler config; extra keys (name, tokenizer, ...) are ignored."""
        if not isinstance(cfg, dict):
            raise ConfigError(f"model config must be a dict, got {type(cfg).__name__}")
        missing = [k for k in ("vocab_size", "dim", "layers", "heads", "ffn_dim") if k not in cfg]
        if missing:
            raise ConfigError(f"model config is missing {', '.join(missing)}")
        try:
            heads = int(cfg["heads"])
            kv_heads = int(cfg.get("kv_heads") or heads)
            dim = int(cfg["dim"])
            head_dim = int(cfg.get("head_dim") or dim // max(heads, 1))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model config: heads, kv_heads, dim and head_dim must be whole numbers ({exc})") from None
        scaling = cfg.get("rope_scaling")
        try:
            rope_scaling = (
                RopeScaling(
                    factor=float(scaling["factor"]),
                    low_freq_factor=float(scaling["low_freq_factor"]),
                    high_freq_factor=float(scaling["high_freq_factor"]),
                    original_context=int(scaling["original_context"]),
                )
                if scaling
                else None
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                "rope_scaling needs numbers for factor, low_freq_factor, high_freq_factor and "
                f"original_context; got {scaling!r}"
            ) from exc
        try:
            args = cls(
                vocab_size=int(cfg["vocab_size"]),
                dim=dim,
                layers=int(cfg["layers"]),
                heads=heads,
                kv_heads=kv_heads,
                head_dim=head_dim,
                ffn_dim=int(cfg["ffn_dim"]),
                norm_eps=float(cfg.get("norm_eps", 1e-5)),
                rope_theta=float(cfg.get("rope_theta", 500_000.0)),
                rope_scaling=rope_scaling,
                tied_embeddings=bool(cfg.get("tied_embeddings", False)),
                max_context=int(cfg.get("max_context", 8192)),
                document_mask=bool(cfg.get("document_mask", True)),
                init_std=float(cfg.get("init_std", 0.02)),
            )
        except (TypeError, ValueError) as exc:
            # A hand-edited meta.json or config.json with a string or null where a number goes.
            raise ConfigError(f"model config has a value that is not a number ({exc})") from None
        args.check()
        return args

    def check(self) -> None:
        """Reject shapes no Llama can have, before any tensor is allocated."""
        for name in ("vocab_size", "dim", "layers", "heads", "kv_heads", "head_dim", "ffn_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.heads % self.kv_heads:
            raise ConfigError(
                f"model config: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})"
            )
        if self.head_dim % 2:
            raise ConfigError(f"model config: head_dim must be even for RoPE, got {self.head_dim}")
        s = self.rope_scaling
        if s is not None and (s.factor <= 0 or s.high_freq_factor <= s.low_freq_factor):
            raise ConfigError(
                "rope_scaling: factor must be positive and high_freq_factor > low_freq_factor"
            )

    def to_dict(self) -> dict[str, Any]:
        """The canonical config dict (what `from_dict` reads back to an equal record)."""
        out = asdict(self)
        return out
