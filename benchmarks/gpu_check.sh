#!/usr/bin/env bash
# One prepared GPU check (run on a lent GPU machine from the repo root; needs the project's
# wheels that the GPU image lacks in .whl/): bf16 step times per freeze mode for the
# wav2vec2-base architecture, then the demo through Lightning with trainer=gpu (bf16-mixed).
set -uo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit 1
fi
export HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__)"
python3 benchmarks/w2v2_step_time.py --device cuda --precision bf16 --steps 5 | tee "$OUT/step_time_bf16.txt"
python3 benchmarks/w2v2_step_time.py --device cuda --precision fp32 --steps 5 | tee "$OUT/step_time_fp32.txt"
/usr/bin/time -f "demo wall %e s" python3 train.py trainer=gpu trainer.enable_progress_bar=false \
  paths.cache_dir=/tmp/cache paths.log_dir=/tmp/logs data.num_workers=4 2>&1 | tee "$OUT/demo_gpu.txt" | grep -E "test EER|demo wall|Error|precision|bf16"
cp /tmp/logs/train/runs/*/report.md "$OUT/demo_gpu_report.md" 2>/dev/null
