#!/usr/bin/env bash
# The CUDA checks, as one prepared script for a GPU machine (see README, "Accelerators").
# Data must travel with the tree: here, before the run,
#   mkdir -p .gpu_data/gowalla && cp ../shared/data/gowalla/{train,test}.txt .gpu_data/gowalla/
# and carry `.gpu_data` (about 5 MB). Writes its logs under $OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp}"
data="$PWD/.gpu_data"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$out/gpu.txt"
# 1. phase timings on the GPU (fp32, then mixed precision)
python3 test/benchmark.py --dataset gowalla --data_path "$data" --device cuda --runs 3 --amp off | tee "$out/bench_cuda_fp32.jsonl"
python3 test/benchmark.py --dataset gowalla --data_path "$data" --device cuda --runs 3 --amp on \
    --phases train_epoch,test_full | tee "$out/bench_cuda_amp.jsonl"
# 2. a short real training: the epoch-0 metrics must equal the CPU's, recall must rise
cd code
python3 main.py --dataset gowalla --data_path "$data" --device cuda --epochs 20 --test_every 10 \
    --tensorboard 0 --path "$out/ck" 2>&1 | tee "$out/train_cuda.txt"
