#!/usr/bin/env bash
# GPU smoke check of MedRG training (needs only `pip install -e .` of this repo and a CUDA torch).
#   bash scripts/gpu_check.sh            # about 1-2 minutes on one GPU
# 1) Trainer on cuda with bf16 + activation checkpointing (tiny 96-px model): prints samples/s and peak memory.
# 2) The same job launched with `torchrun --nproc_per_node=1` (the DDP code path) through `python -m medrg.training`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/medrg_gpu_check}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

timeout 150 python - "$OUT" <<'PY'
import json, sys, time
import torch
assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
from medrg.training.train import build_trainer
out = sys.argv[1]
config = {
    "model": {"source": "tiny", "image_size": 96,
              "overrides": {"image_token_pooling": 2, "box_decoder_dim": 64, "box_decoder_ffn_dim": 128}},
    "data": {"sources": [{"name": "synthcxr", "options": {
        "examples_per_split": {"train": 2048, "validation": 32}, "image_size": 96, "seed": 0, "progress": False}}]},
    "training": {"output_dir": out + "/trainer", "max_steps": 60, "per_device_train_batch_size": 64,
                 "learning_rate": 2e-3, "warmup_steps": 5, "logging_steps": 20, "bf16": True,
                 "activation_checkpointing": True, "dataloader_num_workers": 4, "seed": 0},
}
trainer, processor, _ = build_trainer(config)
lm = trainer.model.language_model.model
torch.cuda.reset_peak_memory_stats()
start = time.perf_counter()
result = trainer.train()
wall = time.perf_counter() - start
print("activation checkpointing:", trainer.model.is_activation_checkpointing, "LM layers:", getattr(lm, "gradient_checkpointing", None))
report = {
    "samples_per_second": round(60 * 64 / wall, 1),
    "trainer_samples_per_second": result.metrics.get("train_samples_per_second"),
    "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
    "final_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
    "wall_seconds": round(wall, 1),
}
print("GPU TRAINER CHECK", json.dumps(report))
json.dump(report, open(out + "/trainer_check.json", "w"))
PY

timeout 120 torchrun --standalone --nproc_per_node=1 -m medrg.training --config configs/tiny.yaml \
  --output-dir "$OUT/torchrun" --set training.use_cpu=false --set training.bf16=true \
  --set training.activation_checkpointing=true --set training.torch_threads=null --set training.max_steps=20 \
  --set training.eval_steps=10 --set training.save_steps=10 | tail -n 25
echo "GPU TORCHRUN CHECK OK: $(ls "$OUT/torchrun/final" | tr '\n' ' ')"
if python -c "import deepspeed" 2>/dev/null; then
  echo "deepspeed is installed: ZeRO-2 launch: torchrun --nproc_per_node=1 -m medrg.training --config configs/tiny.yaml --set training.deepspeed=configs/deepspeed_zero2.json"
fi
