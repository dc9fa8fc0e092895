#!/usr/bin/env bash
# Everything herd measures on a GPU, in one call: a lent H200 gives about 15 minutes in all
# and each start costs one or two, so the checks run back to back and a table prints last.
#
#   1. bf16 kernel accuracy (relative rule) + the kernel speed table   benchmarks/gpu_check.py
#   2. one training step, herd (FlexAttention, varlen) vs HF + Liger
#      and herd's job path, each profiled: time per kernel category      benchmarks/train_step.py
#   3. the CUDA-only tests (bf16 kernel rule, the weight gradient over 4 and 16 chunks,
#      FlexAttention vs the dense mask, Triton vs torch
#      training, bf16 autocast, the post-training chain, QLoRA and generation on CUDA)
#   4. full fine-tuning vs LoRA vs QLoRA on a 1B shape                   benchmarks/lora.py
#   5. each kernel alone under several launch settings, and the fused
#      loss by tokens per chunk                                          benchmarks/kernel_sweep.py
#   6. document-masked attention: FlexAttention vs varlen FlashAttention
#      vs causal SDPA vs a dense mask, the note's shape and the 1B step's  benchmarks/attention.py
#
#   bash benchmarks/gpu_session.sh                       # steps 1, 2, 3, 6 (the acceptance run)
#   bash benchmarks/gpu_session.sh gpu_check sweep       # chosen steps, in the order given
#   TRAIN_VARIANTS="herd hf-liger" bash benchmarks/gpu_session.sh train_step   # some variants
#
# The GPU image lacks lark, pydantic and Liger Kernel; fetch them here once (cp312 wheels):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 --platform any -d .whl lark==1.3.1 pydantic==2.14.4 \
#     pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     typing-extensions==4.16.0 liger-kernel==0.8.5 zstandard==0.25.0
#
# and run it there with the `.whl` folder carried:  bash benchmarks/gpu_session.sh
# Results (JSON per step, logs) go to $OUT when the device tool sets it, else
# benchmarks/results/. Each step has its own time limit (override: GPU_CHECK_LIMIT,
# TRAIN_STEP_LIMIT, VARIANT_TIMEOUT, CUDA_TESTS_LIMIT, LORA_LIMIT, SWEEP_LIMIT, ATTENTION_LIMIT;
# TRAIN_VARIANTS, TRAIN_PROFILE = profiled steps per variant, 0 for none) so one slow
# step cannot eat the rest, and every script writes its JSON as results come, so a cut-short
# step still returns what it measured. Seen on an H200 (2026-11-29; a start took ~35 s):
# gpu_check 62-65 s; train_step 140 s for herd-job, herd and hf-liger, the first herd
# variant ~90 s of it (FlexAttention compiles cold on a fresh machine: give it 150 s);
# cuda_tests 69-83 s; lora's three variants need more than 45 s. Not yet seen: the CUDA-graph
# column gpu_check now adds (~25 s estimated), the profiled steps, herd-varlen, attention.
# herd-unstacked (one matmul per projection, written after the lease) adds one herd
# variant, ~25 s (estimated from herd's warm time), and the CUDA tests three stacked-vs-
# one-by-one cases (~10 s: bf16 FlexAttention is already compiled by the autocast test).
# The defaults below (130 + 260 + 110 + 70 s) aim steps 1, 2, 3 and 6 at one call of
# timeout_s 600; lora and sweep then need a second one.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS=${OUT:-benchmarks/results}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

status=()
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $RESULTS/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    local rc=${PIPESTATUS[0]}
    status+=("$(printf '%-12s rc=%-3s %4ss' "$name" "$rc" $((SECONDS - t0)))")
}

run_step() {
    case $1 in
    gpu_check) step gpu_check "${GPU_CHECK_LIMIT:-130}" python3 benchmarks/gpu_check.py --out "$RESULTS/gpu_check.json" ;;
    train_step)
        local only=()
        for v in ${TRAIN_VARIANTS:-herd hf-liger herd-unstacked herd-varlen herd-job}; do only+=(--only "$v"); done
        step train_step "${TRAIN_STEP_LIMIT:-260}" python3 benchmarks/train_step.py \
            --variant-timeout "${VARIANT_TIMEOUT:-120}" --profile "${TRAIN_PROFILE:-2}" \
            ${only[@]+"${only[@]}"} --out "$RESULTS/train_step.json" ;;
    # compiled kernels, not the interpreter the CPU suite uses; only the tests that need CUDA
    cuda_tests) step cuda_tests "${CUDA_TESTS_LIMIT:-110}" env TRITON_INTERPRET=0 python3 -m pytest -q \
        -p no:cacheprovider -rs -k "cuda or gpu" tests/kernels/test_kernel_accuracy.py \
        tests/kernels/test_kernel_dispatch.py tests/kernels/test_kernel_nf4.py \
        tests/model/test_model_cuda.py tests/post/test_post_cuda.py tests/post/test_cli.py ;;
    # Llama-3.2-1B shape, bf16 autocast, full vs LoRA rank 16
    lora) step lora "${LORA_LIMIT:-90}" python3 benchmarks/lora.py --device cuda --dim 2048 \
        --layers 16 --vocab 128256 --seq 2049 --batch 4 --out "$RESULTS/lora.json" ;;
    sweep) step sweep "${SWEEP_LIMIT:-60}" python3 benchmarks/kernel_sweep.py --out "$RESULTS/kernel_sweep.json" ;;
    # FlexAttention compiles once per head width (two here): allow for two cold compiles
    attention) step attention "${ATTENTION_LIMIT:-70}" python3 benchmarks/attention.py \
        --out "$RESULTS/attention.json" ;;
    *) echo "gpu_session.sh: unknown step '$1' (gpu_check train_step cuda_tests lora sweep attention)" >&2
       exit 2 ;;
    esac
}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(gpu_check train_step cuda_tests attention)
for s in "${steps[@]}"; do run_step "$s"; done

echo
echo "== gpu session summary =="
printf '%s\n' "${status[@]}"
for log in gpu_check train_step attention; do [ -f "$RESULTS/$log.log" ] && tail -12 "$RESULTS/$log.log"; done
true
