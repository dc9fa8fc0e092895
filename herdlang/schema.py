"""The schema: one Pydantic model per block kind, `extra="forbid"` everywhere.

Blocks are validated one at a time here; references between blocks, inheritance and
cross-block rules are the compiler's passes (compiler/resolve.py, compiler/check.py).
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from herdlang.types import (
    Bool,
    Bytes,
    CallModel,
    CondOf,
    Count,
    Fraction,
    Int,
    Length,
    ListOf,
    Number,
    RampOf,
    Ref,
    Steps,
    Strict,
    Tokens,
    Word,
)

# Seeds reach torch.manual_seed and numpy after offsets (rank, round, step): 32 bits keeps
# every sum in range, as torch's own seeds are.
SEED_MAX = 2**32 - 1

class Block(Strict):
    """A top-level block. `named` says whether `kind NAME { }` needs its NAME."""

    named: ClassVar[bool] = True
    #: nested labeled blocks that are single fields (`reward_model rm { }`), not steps
    keyed_blocks: ClassVar[frozenset[str]] = frozenset()
    doc: ClassVar[str] = ""


# -- values written as calls ------------------------------------------------------------


class Norm(CallModel):
    kind: Literal["rmsnorm"] = "rmsnorm"
    eps: Number = Field(1e-5, gt=0)


class FFN(CallModel):
    """SwiGLU; hidden = round_up(multiplier · 8·dim/3, multiple_of) unless `hidden` is set."""

    kind: Literal["swiglu"] = "swiglu"
    multiplier: Number = Field(1.0, gt=0)
    multiple_of: Int = Field(256, ge=1)
    hidden: Int | None = Field(None, gt=0)


class Attention(CallModel):
    kind: Literal["gqa", "mha"] = "gqa"
    kv_heads: Int | None = Field(None, ge=1)
    document_mask: Bool = True


class RopeScaling(CallModel):
    """Llama 3.1 frequency scaling."""

    kind: Literal["llama3"] = "llama3"
    factor: Number = Field(8.0, gt=0)
    low_freq_factor: Number = Field(1.0, gt=0)
    high_freq_factor: Number = Field(4.0, gt=0)
    original_context: Length = Field(8192, gt=0)


class Rope(CallModel):
    kind: Literal["rope"] = "rope"
    theta: Number = Field(10_000.0, gt=0)
    scaling: RopeScaling | None = None


class AdamW(CallModel):
    kind: Literal["adamw"] = "adamw"
    lr: Number = Field(gt=0)
    betas: tuple[Number, Number] = (0.9, 0.95)
    weight_decay: Number = Field(0.1, ge=0)
    eps: Number = Field(1e-8, gt=0)


class Warmup(Strict):
    steps: int | None = None
    tokens: int | None = None
    fraction: float | None = None


def _budget(v: Any) -> Any:
    """`2000 steps`, `1B tokens` or `1%` of the stage."""
    from herdlang import ast

    if isinstance(v, ast.Quantity):
        unit = {"step": "steps", "token": "tokens"}.get(v.unit, v.unit)
        if unit == "tokens":
            return {"tokens": v}
        if unit in ("steps", ""):
            return {"steps": v}
        return {"steps": v}  # the Steps validator reports the wrong unit
    if isinstance(v, ast.Percent):
        return {"fraction": v}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return {"steps": v}
    return v


class Budget(Strict):
    steps: Steps | None = Field(None, ge=0)
    tokens: Tokens | None = Field(None, ge=0)
    fraction: Fraction | None = Field(None, ge=0, le=1)


BudgetValue = Annotated[Budget, BeforeValidator(_budget)]


class Schedule(CallModel):
    """Learning-rate schedule: warmup, then cosine / linear / constant / warmup-stable-decay."""

    kind: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    warmup: BudgetValue = Budget(steps=0)
    min_lr: Number | None = Field(None, ge=0)
    to: Number | None = Field(None, ge=0)
    decay: Fraction = Field(0.2, gt=0, le=1)  # wsd: share of the stage spent decaying


LoraTarget = Annotated[Literal["q", "k", "v", "o", "gate", "up", "down"], Word]


class Lora(CallModel):
    """Low-rank adapters: train a rank-r update of each targeted projection with the base
    frozen (AdamW state for the adapters only); merged into the weights when the job saves."""

    kind: Literal["lora"] = "lora"
    positional = ("rank",)
    rank: Int = Field(16, ge=1)
    alpha: Number | None = Field(None, gt=0, description="the update's scale is alpha / rank (default: rank)")
    targets: Annotated[list[LoraTarget], ListOf] = ["q", "k", "v", "o", "gate", "up", "down"]
    quantize: Annotated[Literal["none", "nf4"], Word] = Field("none", description=(
        "Store the frozen base's projections in 4 bits (nf4: QLoRA's NormalFloat, 0.56 bytes "
        "per weight) while the adapters train; the saved model is the dequantized base plus "
        "the merged update."))


class Average(CallModel):
    """Average the last k checkpoints (Polyak averaging, as the paper does)."""

    kind: Literal["last"] = "last"
    positional = ("k",)
    k: Int = Field(ge=1)


class Law(CallModel):
    """A compute-optimal scaling law N*(C) = A · C^alpha (optimal training tokens)."""

    kind: Literal["power_law"] = "power_law"
    alpha: Number = Field(gt=0, lt=1)
    A: Number = Field(gt=0)
    tolerance: Fraction = Field(0.5, gt=0)


class BatchStep(Strict):
    value: Annotated[int, Field(gt=0)]
    at: Tokens | None = None

    @model_validator(mode="before")
    @classmethod
    def _batch_tokens(cls, data: Any) -> Any:
        # batch sizes use the binary convention: 4M tokens = 4,194,304 = 512 x 8K sequences
        from herdlang.types import _counter

        validate = _counter({"tokens"}, "a batch size in tokens", "4M tokens", binary=True).func
        if isinstance(data, dict) and "value" in data:
            data = {**data, "value": validate(data["value"])}
        return data


class ContextStep(Strict):
    value: Length = Field(gt=0)
    at: None = None


class Condition(Strict):
    """`name >= value` in a gate: a measured quality against a threshold."""

    #: how a diagnostic describes a value written where a condition belongs (`needle = 1.0`)
    written_as: ClassVar[dict[str, str]] = {
        "what": "a gate condition compares with >=, <=, > or < (`=` sets a value)",
        "example": "{key} >= {value}",
    }
    op: Literal[">=", "<=", ">", "<"]
    value: Number


# -- blocks ---------------------------------------------------------------------------------


class TokenizerBlock(Block):
    doc: ClassVar[str] = "A byte-level BPE trained on a data stage, or a tiktoken rank file."
    #: the one format the runtime writes (tokenizer.json's "tiktoken-bpe"), so the compiler does
    #: not pass it on; tests/data/test_layers_agree.py fails if a second kind appears here
    kind: Annotated[Literal["tiktoken"], Word] = Field("tiktoken", description=(
        "The tokenizer's format: `tiktoken`, the only kind (and the default). Trained or loaded, "
        "it is a byte-level BPE in tiktoken's rank-file format, encoded by tiktoken."))
    pattern: Annotated[Literal["llama3", "gpt2"], Word] = "llama3"
    vocab: Count | None = Field(None, ge=256)
    special_tokens: Int = Field(256, ge=16)
    train_on: Ref | None = None
    file: str | None = None
    max_bytes: Bytes = Field(50_000_000, gt=0)


class ModelBlock(Block):
    """Every field optional here: `extends` fills the rest (checked by the compiler)."""

    doc: ClassVar[str] = "A Llama-3-style decoder; `extends` inherits fields."
    tokenizer: Ref | None = None
    vocab: Count | None = Field(None, gt=0)
    layers: Int | None = Field(None, ge=1)
    dim: Int | None = Field(None, ge=1)
    heads: Int | None = Field(None, ge=1)
    head_dim: Int | None = Field(None, ge=1)
    norm: Norm | None = None
    ffn: FFN | None = None
    attention: Attention | None = None
    rope: Rope | None = None
    tied: Bool | None = None
    context: Length | None = Field(None, gt=0)
    init_std: Number | None = Field(None, gt=0)


class DataStep(Strict):
    """`source jsonl("...")`, `dedup minhash { }`, `filter ... { }`, `quality ... { }`;
    the component's own config is validated against the component registry."""

    model_config = {"extra": "allow"}
    step: Literal["source", "dedup", "filter", "quality"]
    kind: str


class DataBlock(Block):
    doc: ClassVar[str] = "Documents: sources, then dedup and filter steps in order."
    steps: list[DataStep] = Field(default_factory=list)
    val_fraction: Fraction = Field(0.01, ge=0, lt=1)
    seed: Int = Field(0, ge=0, le=SEED_MAX, description=(
        "Seeds the validation split (which documents are held out) and the order in which "
        "training reads this stage's documents."))


class MixBlock(Block):
    doc: ClassVar[str] = "Weights over data stages (must sum to 100%)."
    options: ClassVar[tuple[str, ...]] = ("max_epochs", "seed")
    weights: dict[str, Fraction] = Field(default_factory=dict)
    max_epochs: Number = Field(4.0, gt=0)
    seed: Int | None = Field(None, ge=0, le=SEED_MAX, description=(
        "Seeds the order in which training reads each stage's documents; unset, the run's seed."))

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "weights" not in data:
            weights = {k: v for k, v in data.items() if k not in cls.options}
            data = {k: v for k, v in data.items() if k in cls.options} | {"weights": weights}
        return data


class DatasetBlock(Block):
    doc: ClassVar[str] = ("Post-training data: JSONL files (TRL conventions) or generated tasks; or a "
                          "multiple-choice benchmark (format = choices) for the multiple_choice eval.")
    format: Annotated[Literal["messages", "preferences", "prompts", "tasks", "choices"], Word] = "messages"
    path: str | None = None
    generate: dict[str, Any] | None = None
    # the held-out share; a choices dataset is a benchmark, all held out, and refuses it (H0407)
    val_fraction: Fraction = Field(0.1, ge=0, lt=1)


class CheckpointBlock(Block):
    doc: ClassVar[str] = ("A checkpoint made elsewhere (a Hugging Face Llama folder or a herd checkpoint) "
                          "that stages continue `from`: fine-tune, extend or anneal a local Llama 3.")
    path: str = Field(description=(
        "The folder: a Hugging Face Llama (`config.json` + safetensors) or a herd checkpoint "
        "(`meta.json`). Relative to the spec's folder; read, never written."))
    model: Ref = Field(description=(
        "The model block it holds. Loading compares every shape and RoPE setting with it and "
        "fails on a difference, so the plan's estimates describe the real network."))
    context: Length | None = Field(None, gt=0, description=(
        "The length it was last trained at (where an extension's ramp starts); default: the "
        "model's `context`."))


class PretrainBlock(Block):
    doc: ClassVar[str] = "Pre-training from scratch on a mix or a data stage."
    model: Ref
    data: Ref
    tokens: Tokens = Field(gt=0)
    context: Length = Field(gt=0)
    batch: Annotated[list[BatchStep], RampOf]
    micro_batch: Int | None = Field(None, ge=1)
    optimizer: AdamW
    schedule: Schedule = Schedule()
    clip: Number = Field(1.0, gt=0)
    seed: Int | None = Field(None, ge=0, le=SEED_MAX)
    checkpoint_every: Steps | None = Field(None, gt=0)
    eval_every: Steps | None = Field(None, gt=0)
    evals: Annotated[list[Ref], ListOf] = ["perplexity"]
    compile: Bool = False
    law: Law | Ref | None = None  # power_law(alpha, A) or the name of a scaling block


class ExtendBlock(Block):
    doc: ClassVar[str] = "Context extension in increments, each gated by evals."
    from_: Ref = Field(alias="from")
    model: Ref | None = None  # optional: must match the checkpoint's model
    context: Annotated[list[ContextStep], RampOf] = Field(min_length=2)
    tokens: Tokens = Field(gt=0)
    data: Ref | None = None
    rope: Rope | None = None
    batch: Annotated[list[BatchStep], RampOf] | None = None
    optimizer: AdamW | None = None
    schedule: Schedule | None = None
    gate: dict[str, Annotated[Condition, CondOf]] = Field(default_factory=dict)
    max_extra: Fraction = Field(0.5, ge=0)
    evals: Annotated[list[Ref], ListOf] = []  # run after the last increment (reported, not gating)
    seed: Int | None = Field(None, ge=0, le=SEED_MAX)


class AnnealBlock(Block):
    doc: ClassVar[str] = "Annealing: LR to zero on an upsampled mix, then checkpoint averaging."
    from_: Ref = Field(alias="from")
    model: Ref | None = None  # optional: must match the checkpoint's model
    tokens: Tokens = Field(gt=0)
    lr: Schedule = Schedule(kind="linear", to=0.0)
    peak_lr: Number | None = Field(None, gt=0)
    mix: dict[str, Fraction] | None = None
    data: Ref | None = None
    average: Average | None = None
    batch: Annotated[list[BatchStep], RampOf] | None = None
    context: Length | None = Field(None, gt=0)
    evals: Annotated[list[Ref], ListOf] = ["perplexity"]
    seed: Int | None = Field(None, ge=0, le=SEED_MAX)


def _post_checkpoint_every() -> Any:
    """A post-training step's state-saving interval (`runtime.jobs.post_jobs.train_loop`)."""
    return Field(50, gt=0, description=(
        "Save the training state every this many steps; a killed job resumes from the last save "
        "and ends with the weights of an uninterrupted run."))


def _post_eval_every() -> Any:
    """How often a post-training step measures its held-out split while it trains."""
    return Field(None, gt=0, description=(
        "Measure the held-out split (the dataset's val records) every this many steps, before "
        "the first and after the last: SFT's masked loss, DPO's loss and reward accuracy, the "
        "reward model's loss and pair accuracy. Default: ten times per job."))


class RewardModelStep(Strict):
    name: Ref
    data: Ref
    lr: Number = Field(1e-5, gt=0)
    steps: Steps | None = Field(None, gt=0)
    epochs: Number = Field(1.0, gt=0)
    batch: Int = Field(16, ge=1)
    checkpoint_every: Steps = _post_checkpoint_every()
    eval_every: Steps | None = _post_eval_every()
    lora: Lora | None = None


class RejectionSamplingStep(Strict):
    k: Int = Field(10, ge=1)
    scorer: Ref = "verifier"
    prompts: Ref | None = None
    count: Int = Field(256, ge=1)
    temperature: Number = Field(0.8, ge=0)
    top_p: Fraction = Field(0.95, gt=0, le=1)
    max_new_tokens: Int = Field(64, ge=1)


class SFTStep(Strict):
    data: Ref
    lr: Number = Field(1e-5, gt=0)
    steps: Steps | None = Field(None, gt=0)
    epochs: Number = Field(1.0, gt=0)
    batch: Int = Field(16, ge=1)
    checkpoint_every: Steps = _post_checkpoint_every()
    eval_every: Steps | None = _post_eval_every()
    lora: Lora | None = None
    schedule: Schedule | None = None


class DPOStep(Strict):
    data: Ref | None = None
    beta: Number = Field(0.1, gt=0)
    lr: Number = Field(1e-5, gt=0)
    steps: Steps | None = Field(None, gt=0)
    epochs: Number = Field(1.0, gt=0)
    nll: Number = Field(0.2, ge=0)
    mask: Annotated[Literal["formatting_tokens", "none"], Word] = "formatting_tokens"
    batch: Int = Field(8, ge=1)
    checkpoint_every: Steps = _post_checkpoint_every()
    eval_every: Steps | None = _post_eval_every()
    lora: Lora | None = None


class PosttrainBlock(Block):
    doc: ClassVar[str] = "Rounds of reward modelling, rejection sampling, SFT and DPO."
    keyed_blocks: ClassVar[frozenset[str]] = frozenset({"reward_model"})
    from_: Ref = Field(alias="from")
    model: Ref | None = None  # optional: must match the checkpoint's model
    rounds: Int = Field(1, ge=1)
    reward_model: RewardModelStep | None = None
    rejection_sampling: RejectionSamplingStep | None = None
    sft: SFTStep | None = None
    dpo: DPOStep | None = None
    average: Bool | Annotated[list[Ref], ListOf] = False
    evals: Annotated[list[Ref], ListOf] = Field(["tasks"], description=(
        "Run before training and after each step. Default: `tasks` (greedy accuracy) when the "
        "post-training data has checkable answers (generated tasks, prompts), `response_loss` "
        "(held-out loss on the reference replies) for conversations and preference pairs."))
    seed: Int | None = Field(None, ge=0, le=SEED_MAX)


class EvalBlock(Block):
    doc: ClassVar[str] = "A named, configured evaluation (usable in gates and stages)."
    model_config = {"extra": "allow"}
    kind: Ref


class ScalingBlock(Block):
    doc: ClassVar[str] = ("An IsoFLOP sweep: one short pre-training run per (compute budget, model size), "
                          "then a fitted law N*(C) = A * C^alpha.")
    models: Annotated[list[Ref], ListOf] = Field(min_length=3)
    data: Ref
    budgets: Annotated[list[Annotated[Number, Field(gt=0)]], ListOf] = Field(min_length=2)
    context: Length = Field(gt=0)
    batch: Annotated[list[BatchStep], RampOf]
    optimizer: AdamW
    schedule: Schedule = Schedule(kind="cosine", warmup=Budget(fraction=0.1))
    target: Number | None = Field(None, gt=0)
    eval_tokens: Tokens = Field(65_536, gt=0)
    forecast: Ref | None = Field(None, description=(
        "An eval that reports accuracy and the answer's NLL (`choice`): each run is scored "
        "on it and the fit forecasts its accuracy at `target` (the paper's two steps)."))
    seed: Int | None = Field(None, ge=0, le=SEED_MAX)


class ProbeBlock(Block):
    doc: ClassVar[str] = ("A data probe: anneal a checkpoint with a share of a candidate source, against a "
                          "control anneal on the default mix, and report the eval deltas.")
    from_: Ref = Field(alias="from")
    new: Ref
    share: Fraction = Field(gt=0, lt=1)
    tokens: Tokens = Field(gt=0)
    lr: Schedule = Schedule(kind="linear", to=0.0)
    evals: Annotated[list[Ref], ListOf] = ["perplexity"]
    threshold: Number = Field(0.01, ge=0, description=(
        "The smallest mean change that counts: a loss (nats) or an accuracy (`2%`) that moves "
        "less than this either way is called neutral, not helps or hurts."))
    seed: Int | None = Field(None, ge=0, le=SEED_MAX)


class EvaluateBlock(Block):
    doc: ClassVar[str] = ("Evaluations of a checkpoint with no training: a stage's result or a checkpoint "
                          "made elsewhere, on benchmarks, held-out text or a dataset's replies.")
    from_: Ref = Field(alias="from")
    evals: Annotated[list[Ref], ListOf] = Field(min_length=1)
    data: Ref | None = Field(None, description=(
        "Held-out text for the evals that read it (perplexity, choice, needle): a data block or a mix. "
        "Default: the data of the stage evaluated (a checkpoint block has none)."))


class Hardware(Strict):
    gpu: Annotated[str, Word] = Field("h100", description=(
        "A GPU the estimates know (`compiler.estimates.GPUS`: h100, h200, a100, b200, mi300x, l40s, "
        "cpu), or any name with `peak_bf16_tflops` and `memory` stated."))
    count: Int = Field(1, ge=1)
    mfu: Fraction = Field(0.4, gt=0, le=1)
    peak_bf16_tflops: Number | None = Field(None, gt=0, description=(
        "Dense bf16 peak in TFLOP/s, for a GPU not in the table (or to override its figure)."))
    memory: Bytes | None = Field(None, gt=0, description=(
        "Memory per GPU (`80 GiB`), for a GPU not in the table (or to override its figure)."))


class Parallel(Strict):
    tensor: Int = Field(1, ge=1)
    pipeline: Int = Field(1, ge=1)
    context: Int = Field(1, ge=1)
    data: Int | None = Field(None, ge=1)
    fsdp: Bool = True
    activation_checkpointing: Bool = False
    micro_batch: Int = Field(1, ge=1)


class RunBlock(Block):
    doc: ClassVar[str] = "Run settings: seed, device, workers, hardware and parallel layout."
    named: ClassVar[bool] = False
    seed: Int = Field(0, ge=0, le=SEED_MAX)
    device: Annotated[Literal["auto", "cpu", "cuda"], Word] = "auto"
    workers: Int = Field(2, ge=1)
    precision: Annotated[Literal["bf16", "fp32"], Word] = "bf16"
    hardware: Hardware = Hardware()
    parallel: Parallel = Parallel()


BLOCKS: dict[str, type[Block]] = {
    "tokenizer": TokenizerBlock,
    "model": ModelBlock,
    "data": DataBlock,
    "mix": MixBlock,
    "dataset": DatasetBlock,
    "checkpoint": CheckpointBlock,
    "pretrain": PretrainBlock,
    "extend": ExtendBlock,
    "anneal": AnnealBlock,
    "posttrain": PosttrainBlock,
    "eval": EvalBlock,
    "scaling": ScalingBlock,
    "probe": ProbeBlock,
    "evaluate": EvaluateBlock,
    "run": RunBlock,
}

#: blocks that train a checkpoint
STAGES = ("pretrain", "extend", "anneal", "posttrain")
#: what a stage's `from` may name: a stage, or a checkpoint block (one made elsewhere)
SOURCES = ("checkpoint", *STAGES)


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The Pydantic model inside a field annotation (`X | None`, `list[X]`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_in(arg)
        if found is not None:
            return found
    return None


def literal_values(annotation: Any) -> list[str]:
    """String choices of a `Literal[...]` field, looking through Annotated/Optional/list."""
    if typing.get_origin(annotation) is Literal:
        return [v for v in typing.get_args(annotation) if isinstance(v, str)]
    out: list[str] = []
    for arg in typing.get_args(annotation):
        for v in literal_values(arg):
            if v not in out:
                out.append(v)
    return out


def field_names(model: type[Strict]) -> list[str]:
    """Keys a user may write (aliases such as `from` included)."""
    names = []
    for name, info in model.model_fields.items():
        names.append(info.alias or name)
    return names
