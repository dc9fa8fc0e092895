"""Reference keys complete with names of the right kind: a sweep's `forecast` offers evals
(components included), its `models` the defined models, a probe's `new` data stages, a
stage's `from` the stages and checkpoint blocks."""

from __future__ import annotations

from herdlang.editor.lsp import _values_for
from herdlang.schema import EvalBlock, PosttrainBlock, ProbeBlock, ScalingBlock

TEXT = """model xs { layers = 1 }
checkpoint downloaded { path = "llama"  model = xs }
pretrain base { model = xs }
data web { source python_stdlib }
dataset heldout { format = tasks }
eval long_choice { kind = choice  context = 96 }
scaling iso {
  forecast =
}
"""


def labels(model: type, key: str, top: str) -> set[str]:
    return {i.label for i in _values_for(None, None, TEXT, model, key, [(top, "x")])}  # type: ignore[arg-type]


def test_forecast_completes_evals_and_models_complete_models() -> None:
    forecast = labels(ScalingBlock, "forecast", "scaling")
    assert {"choice", "long_choice", "perplexity"} <= forecast and "xs" not in forecast
    assert labels(ScalingBlock, "models", "scaling") == {"xs"}


def test_probe_new_completes_data_stages() -> None:
    assert labels(ProbeBlock, "new", "probe") == {"web"}


def test_a_tasks_eval_data_completes_datasets() -> None:
    assert labels(EvalBlock, "data", "eval") == {"heldout"}


def test_from_completes_stages_and_checkpoint_blocks() -> None:
    assert labels(PosttrainBlock, "from", "posttrain") == {"base", "downloaded"}
