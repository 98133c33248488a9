"""Recipe of the embedded default MedRG: a pretrained EfficientNet-Lite0 that sees the X-ray at 512 px (frozen, its
features cached once per image and augmentation) under a small report-reading LM, and a box decoder that starts
from the text's box and refines it with features sampled around it on three feature levels (strides 8, 16, 32).

Steps (from the repository root, CPU; each step resumes where it stopped):

    python recipes/default_model.py assemble   # runs/default_v2/init: Lite0 + the LM/tokenizer of the start model
    python recipes/default_model.py cache      # runs/default_v2/cache: frozen Lite0 features per image x augmentation
    python recipes/default_model.py train      # runs/default_v2/final (checkpoints every 250 steps; resumable)
    python recipes/default_model.py summary    # rewrite runs/default_v2/train_summary.json from the checkpoint

The LM, its tokenizer and the phrase read-out start from `--start` (default `runs/previous_default`: the previous
embedded default, trained from scratch by `medrg train --config configs/default_model.yaml`). Data: the ChestX-ray8
train part (../shared/data/chestxray8) with the template and the GPT reports (the LLaMA reports are never read:
scoring on them measures a writer the model never saw) + SynthCXR train examples (drawn at 256 px) for the
language of negations and normal reports. Then measure and install with `recipes/install_default_model.py`.

The box decoder starts from the phrase's box prior (the mean ChestX-ray8 training box of its finding, side and
zone; fitted here from the training phrases and saved in the processor) and the image moves it. This recipe (1500
steps) gives the embedded default: `medrg/default_model/RECIPE.md` has its times and
`benchmarks/results/seeing_default.md` its ablation table (`python benchmarks/seeing.py --model default
--previous runs/previous_default`).

Mirrors: `--flipped-augmentations 3` adds each ChestX-ray8 training image flipped left-right, in 3 variants, with
"left" and "right" swapped in its report and answer (rows whose findings all name a side; rows naming one-sided
anatomy such as the middle lobe or lingula are not mirrored), which the box prior is not fitted on. The shipped
default was trained without them; `--reuse-cache runs/default_v2/cache` takes the unmirrored features from an
earlier cache instead of computing them again.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "runs" / "default_v2"
CHESTXRAY8 = ROOT.parent / "shared" / "data" / "chestxray8"
IMAGE_SIZE = 512
# hidden states of EfficientNet-Lite0 at strides 8 (40 ch), 16 (112 ch) and 32 (320 ch)
LEVELS, LEVEL_CHANNELS = [5, 11, 16], [40, 112, 320]
DECODER = dict(
    vision_feature_layer=16,
    vision_feature_channels=320,
    image_token_pooling=2,
    box_feature_levels=LEVELS,
    box_feature_channels=LEVEL_CHANNELS,
    box_initial_source="text",
    box_sampling_window=2.0,
    box_sampling_points=4,
    box_decoder_layers=3,
    box_decoder_dim=64,
    box_decoder_ffn_dim=128,
    box_decoder_heads=4,
)
# decoder parts that read the phrase (same shapes as the start model's): warm-started
PHRASE_PARTS = ("phrase_attention.", "box_state_norm.", "phrase_norm.", "query_proj.", "query_embed.")


@dataclass
class Recipe:
    augmentations: int = 5  # per ChestX-ray8 train image, the first is the image itself
    flipped_augmentations: int = 0  # per mirrored ChestX-ray8 image (0: no mirrored rows; see the docstring)
    synthcxr_examples: int = 1200
    steps: int = 1500
    batch_size: int = 16
    learning_rate: float = 1e-3
    lm_learning_rate: float = 3e-4
    warmup: int = 100
    save_every: int = 250
    seed: int = 0
    synthcxr_fraction: float = 0.15  # share of each batch drawn from SynthCXR rows
    reference_dropout: float = 0.1  # share of findings trained without the prior box (the text box starts)
    # 0: the vision tower stays frozen. A level of LEVELS (not the last): the tower's blocks after that hidden state
    # train (from its cached features, BatchNorm statistics frozen) at `vision_learning_rate`
    tune_vision_from: int = 0
    vision_learning_rate: float = 1e-4


# ----- assemble -----
def assemble(start: Path, out: Path) -> None:
    """The start model's LM, tokenizer and phrase read-out + EfficientNet-Lite0 + a new projector and decoder."""
    from medrg.processing.image_processing_medrg import MedRGImageProcessor

    from medrg import MedRGConfig, MedRGForReportGrounding, MedRGProcessor
    from medrg.backbones import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD, efficientnet_lite0_model

    old = MedRGForReportGrounding.from_pretrained(str(start))
    processor = MedRGProcessor.from_pretrained(str(start))
    tower = efficientnet_lite0_model(image_size=IMAGE_SIZE)
    config = MedRGConfig(
        **{**old.config.to_dict(), **DECODER, "vision_config": tower.config.to_dict()},
    )
    torch.manual_seed(0)
    model = MedRGForReportGrounding(config)
    model.model.vision_tower.load_state_dict(tower.state_dict())
    model.model.language_model.load_state_dict(old.model.language_model.state_dict())
    decoder = {k: v for k, v in old.box_decoder.state_dict().items() if k.startswith(PHRASE_PARTS)}
    missing = model.box_decoder.load_state_dict(decoder, strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    model.config.num_image_tokens = model.probe_num_image_tokens(IMAGE_SIZE)
    model.generation_config = old.generation_config
    processor.image_processor = MedRGImageProcessor(
        image_size=IMAGE_SIZE, image_mean=EFFICIENTNET_LITE0_MEAN, image_std=EFFICIENTNET_LITE0_STD
    )
    processor.num_image_tokens = model.config.num_image_tokens
    processor.score_calibration = [1.0, 0.0]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    print(f"assembled {out}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")


# ----- augmentation that respects anatomy: zoom/shift, intensity, gamma; a mirror swaps left and right -----
SIDE_SWAP = {"left": "right", "right": "left"}
# anatomy that exists on one side only: a mirrored report naming it would describe no real chest
ONE_SIDED = re.compile(r"middle lobe|lingul", re.IGNORECASE)
SIDE_WORD = re.compile(r"\b(?:left|right)\b", re.IGNORECASE)


def swap_sides(text: str) -> str:
    """`text` with "left" and "right" exchanged, keeping each word's capitalisation."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        other = SIDE_SWAP[word.lower()]
        return other.upper() if word.isupper() else other.capitalize() if word[0].isupper() else other

    return SIDE_WORD.sub(swap, text)


def mirrored_row(row: dict) -> dict | None:
    """The row seen in a mirror: image flipped left-right, boxes mirrored, "left" and "right" swapped in the report
    and in every answer phrase. None where a mirror cannot be described: a finding whose phrase names no side (its
    prior box would not mirror with it: the heart, for one, moves to the other side) or one-sided anatomy."""
    findings = row["findings"] or []
    if (
        not findings
        or not all(SIDE_WORD.search(f["phrase"]) for f in findings)
        or ONE_SIDED.search(row["report"])
    ):
        return None
    width = row["image"].size[0]
    return {
        **row,
        "image_key": "cxr8flip/" + row["image_key"].split("/", 1)[1],
        "image": ImageOps.mirror(row["image"]),
        "report": swap_sides(row["report"]),
        "findings": [
            {**f, "phrase": swap_sides(f["phrase"]),
             "boxes": [[width - b[2], b[1], width - b[0], b[3]] for b in f["boxes"]]}
            for f in findings
        ],
    }  # fmt: skip


def draw_augmentation(rng: random.Random, index: int) -> dict:
    if index == 0:
        return {"zoom": 1.0, "dx": 0.0, "dy": 0.0, "gain": 1.0, "offset": 0.0, "gamma": 1.0}
    return {
        "zoom": rng.uniform(0.9, 1.15),
        "dx": rng.uniform(-0.05, 0.05),
        "dy": rng.uniform(-0.05, 0.05),
        "gain": rng.uniform(0.85, 1.15),
        "offset": rng.uniform(-0.08, 0.08),
        "gamma": math.exp(rng.uniform(-0.3, 0.3)),
    }


def augment_image(image: Image.Image, aug: dict) -> Image.Image:
    image = image.convert("L")
    size = image.size[0]
    zoom, c = aug["zoom"], size / 2
    coeffs = (1 / zoom, 0, c - (c + aug["dx"] * size) / zoom, 0, 1 / zoom, c - (c + aug["dy"] * size) / zoom)
    image = image.transform(image.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    array = np.asarray(image).astype(np.float32) / 255.0
    array = np.clip((array - 0.5) * aug["gain"] + 0.5 + aug["offset"], 0, 1) ** aug["gamma"]
    return Image.fromarray((array * 255).round().astype(np.uint8))


def augment_boxes(boxes: np.ndarray, aug: dict, size: float) -> np.ndarray:
    """Pixel `[x0, y0, x1, y1]` boxes moved with the image (clipped to it)."""
    c = size / 2
    out = boxes.copy()
    out[:, [0, 2]] = (boxes[:, [0, 2]] - c) * aug["zoom"] + c + aug["dx"] * size
    out[:, [1, 3]] = (boxes[:, [1, 3]] - c) * aug["zoom"] + c + aug["dy"] * size
    return out.clip(0, size)


# ----- cache -----
def training_rows(recipe: Recipe) -> list[dict]:
    """Rows `{image_key, image, report, findings}`: ChestX-ray8 train (template + GPT reports) and SynthCXR."""
    from medrg import load_grounding_dataset

    rows = []
    data = load_grounding_dataset(
        "chestxray8", data_dir=CHESTXRAY8, reports=["template", "gpt"], progress=False
    )
    for row in data["train"]:
        rows.append({"image_key": "cxr8/" + row["image_id"].split("#")[0], **row})
        mirrored = mirrored_row(rows[-1]) if recipe.flipped_augmentations else None
        if mirrored is not None:
            rows.append(mirrored)
    synth = load_grounding_dataset(
        "synthcxr",
        examples_per_split={"train": recipe.synthcxr_examples, "validation": 1, "test": 1},
        image_size=256,
        seed=0,
        progress=False,
    )
    for index, row in enumerate(synth["train"]):
        rows.append({"image_key": f"synth/{index}", **row})
    return rows


@torch.no_grad()
def cache_features(model, processor, images: dict, augs: dict, reuse: Path | None) -> tuple[list, dict]:
    """The Lite0 feature maps (fp16, one list per level) of every image x augmentation, and the index of each pair.
    `reuse`: an earlier cache of this recipe; the pairs it holds are taken from it, after checking that the first
    one is what the tower computes now."""
    maps: list[list[torch.Tensor]] = [[] for _ in LEVELS]
    index_of: dict[tuple[str, int], int] = {}
    earlier = torch.load(reuse / "cache.pt", weights_only=False) if reuse else {"index": [], "maps": []}
    earlier_index = {tuple(pair): i for i, pair in enumerate(earlier["index"])}
    started, checked = time.perf_counter(), False
    for number, key in enumerate(sorted(images)):
        for a, aug in enumerate(augs[key]):
            index_of[(key, a)] = len(maps[0])
            earlier_at = earlier_index.get((key, a))
            if earlier_at is not None and checked:
                for level, earlier_maps in enumerate(earlier["maps"]):
                    maps[level].append(earlier_maps[earlier_at])
                continue
            image = augment_image(images[key], aug)
            pixels = processor.image_processor([image], return_tensors="pt")["pixel_values"]
            grids = model.encode_vision(pixels)  # (token grid = level 16, *levels)
            for level, grid in enumerate(grids[1:]):
                maps[level].append(grid[0].to(torch.float16))
            if earlier_at is not None:
                for level, earlier_maps in enumerate(earlier["maps"]):
                    if not torch.allclose(
                        earlier_maps[earlier_at].float(), maps[level][-1].float(), atol=2e-2, rtol=2e-2
                    ):
                        raise ValueError(
                            f"{reuse}: its features of {key} differ from the tower's: not this recipe"
                        )
                checked = True
        if number % 100 == 0:
            print(f"cache {number}/{len(images)} images, {time.perf_counter() - started:.0f} s", flush=True)
    return maps, index_of


def tokenized_examples(rows: list[dict], images: dict, augs: dict, index_of: dict, processor) -> list[dict]:
    """Each row's prompt + answer ids, labels, pixel boxes and phrases, with the indices of its cached features."""
    examples = []
    for row in rows:
        image = images[row["image_key"]]
        size = image.size[0]
        if image.size[0] != image.size[1]:
            raise ValueError(f"{row['image_key']}: the recipe expects square images, got {image.size}")
        findings = [{"phrase": f["phrase"], "boxes": f["boxes"]} for f in row["findings"] or []]
        batch = processor(images=[image], text=[row["report"]], findings=[findings])
        mask = batch["attention_mask"][0].bool()
        examples.append({
            "input_ids": batch["input_ids"][0][mask], "labels": batch["labels"][0][mask],
            "boxes": [np.asarray(f["boxes"], dtype=np.float32).reshape(-1, 4) for f in findings], "size": size,
            "phrases": [f["phrase"] for f in findings], "categories": [f.get("category") for f in row["findings"] or []],
            "maps": [index_of[(row["image_key"], a)] for a in range(len(augs[row["image_key"]]))],
            "augs": augs[row["image_key"]], "source": row["image_key"].split("/")[0],
        })  # fmt: skip
    return examples


def build_cache(recipe: Recipe, init: Path, out: Path, reuse: Path | None = None) -> None:
    """Lite0 features (fp16) of every training image x augmentation, and the tokenized rows. `reuse`: an earlier
    cache of this recipe (same seed, start model and augmentations): the features of the image x augmentation pairs
    it holds are taken from it, after checking that the first one is what the tower computes now."""
    from medrg import MedRGForReportGrounding, MedRGProcessor

    model = MedRGForReportGrounding.from_pretrained(str(init)).eval()
    processor = MedRGProcessor.from_pretrained(str(init))
    out.mkdir(parents=True, exist_ok=True)
    rows = training_rows(recipe)
    images = {}
    for row in rows:
        images.setdefault(row["image_key"], row["image"])
    rng = random.Random(recipe.seed)
    count = {"cxr8": recipe.augmentations, "cxr8flip": recipe.flipped_augmentations}
    augs = {
        k: [draw_augmentation(rng, i) for i in range(count.get(k.split("/")[0], 1))] for k in sorted(images)
    }
    started = time.perf_counter()
    maps, index_of = cache_features(model, processor, images, augs, reuse)
    examples = tokenized_examples(rows, images, augs, index_of, processor)
    index = sorted(index_of, key=index_of.get)
    torch.save(
        {"maps": [torch.stack(m) for m in maps], "examples": examples, "index": index}, out / "cache.pt"
    )
    seconds = round(time.perf_counter() - started, 1)
    (out / "cache_summary.json").write_text(json.dumps({"seconds": seconds, "features": len(maps[0])}) + "\n")
    print(f"cached {len(maps[0])} image x augmentation features, {len(examples)} rows, {seconds:.0f} s")


# ----- train -----
def fit_prior(cache: dict, reader):
    """The box prior (mean box per finding, side and zone of a phrase) of the ChestX-ray8 training findings."""
    from medrg.processing.box_prior_medrg import BoxPrior

    pairs = [
        (phrase, (boxes / example["size"]).tolist())
        for example in cache["examples"]
        if example["source"] == "cxr8"
        for phrase, boxes in zip(example["phrases"], example["boxes"])
    ]
    return BoxPrior.fit(pairs, reader)


def add_references(cache: dict, prior, reader) -> None:
    """Each example's two prior start boxes per finding (normalised cxcywh; None where the prior has none)."""
    for example in cache["examples"]:
        example["references"] = [prior.starts(phrase, reader) for phrase in example["phrases"]]


def pick_rows(cache: dict, rng: random.Random, recipe: Recipe) -> list[int]:
    """A batch of row indices, `synthcxr_fraction` of them SynthCXR rows."""
    if "by_source" not in cache:
        cache["by_source"] = {}
        for index, example in enumerate(cache["examples"]):
            cache["by_source"].setdefault(example["source"], []).append(index)
    synth = sum(rng.random() < recipe.synthcxr_fraction for _ in range(recipe.batch_size))
    synth = min(synth, len(cache["by_source"].get("synth", [])))
    real = cache["by_source"]["cxr8"] + cache["by_source"].get("cxr8flip", [])
    return rng.sample(real, recipe.batch_size - synth) + rng.sample(
        cache["by_source"].get("synth", []), synth
    )


def make_batch(
    cache: dict, picks: list[int], rng: random.Random, pad_id: int, reference_dropout: float = 0.0
) -> dict:
    examples = [cache["examples"][i] for i in picks]
    length = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(picks), length), pad_id, dtype=torch.long)
    labels = torch.full((len(picks), length), -100, dtype=torch.long)
    mask = torch.zeros(len(picks), length, dtype=torch.long)
    chosen, targets = [], []
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        ids[row, length - n :], labels[row, length - n :], mask[row, length - n :] = (
            example["input_ids"], example["labels"], 1
        )  # fmt: skip
        a = rng.randrange(len(example["maps"]))
        boxes = [augment_boxes(b, example["augs"][a], example["size"]) for b in example["boxes"]]
        if any(((b[:, 2] - b[:, 0] < 1) | (b[:, 3] - b[:, 1] < 1)).any() for b in boxes):
            a, boxes = 0, example["boxes"]  # a box left the image: this row uses the image itself
        chosen.append(example["maps"][a])
        targets.append([torch.from_numpy(b / example["size"]) for b in boxes])
    findings = max(1, max(len(t) for t in targets))
    per = max([1] + [len(b) for t in targets for b in t])
    target_boxes = torch.zeros(len(picks), findings, per, 4)
    target_mask = torch.zeros(len(picks), findings, per, dtype=torch.bool)
    for row, boxes in enumerate(targets):
        for j, b in enumerate(boxes):
            cxcywh = torch.stack(
                ((b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), -1
            )
            target_boxes[row, j, : len(b)], target_mask[row, j, : len(b)] = cxcywh, True
    grids = [level[chosen].float().permute(0, 1, 2, 3) for level in cache["maps"]]
    batch = {
        "input_ids": ids, "attention_mask": mask, "labels": labels, "target_boxes": target_boxes,
        "target_boxes_mask": target_mask, "vision_maps": (grids[-1], *grids),
    }  # fmt: skip
    if all("references" in e for e in examples):
        # the prior box is the report's, not the augmented image's: the image has to move it
        references = torch.full((len(picks), findings, 2, 4), 0.5)
        given = torch.zeros((len(picks), findings), dtype=torch.bool)
        for row, example in enumerate(examples):
            for j, box in enumerate(example["references"]):
                if box is not None and rng.random() >= reference_dropout:
                    references[row, j], given[row, j] = torch.tensor(box), True
        batch["reference_boxes"], batch["reference_boxes_mask"] = references, given
    return batch


def tuned_vision_blocks(model, recipe: Recipe) -> dict:
    """Freeze the vision tower (eval mode: BatchNorm statistics stay ImageNet's); with `tune_vision_from`, make its
    blocks after that hidden state trainable. Returns `{state-dict prefix: block}` of the trainable blocks."""
    tower = model.model.vision_tower
    tower.requires_grad_(False).eval()
    level = recipe.tune_vision_from
    if not level:
        return {}
    blocks = tower.encoder.blocks
    if (
        level not in LEVELS[:-1]
        or LEVELS[-1] != len(blocks)
        or model.config.vision_feature_layer != LEVELS[-1]
    ):
        raise ValueError(
            f"tune_vision_from={level}: must be a cached level of {LEVELS[:-1]} below the tower's last block, "
            "which gives the image tokens and the coarsest level"
        )
    tuned = {f"model.vision_tower.encoder.blocks.{i}.": blocks[i] for i in range(level, len(blocks))}
    for block in tuned.values():
        block.requires_grad_(True)
    return tuned


def tuned_vision_maps(maps: tuple, tuned: dict, recipe: Recipe) -> tuple:
    """The cached `(token grid, *levels)` with the coarsest level recomputed by the trainable blocks from the cached
    level `tune_vision_from` (grids are `(batch, height, width, channels)`)."""
    x = maps[1 + LEVELS.index(recipe.tune_vision_from)].permute(0, 3, 1, 2).contiguous()
    for block in tuned.values():
        x = block(x)
    top = x.permute(0, 2, 3, 1)
    return (top, *maps[1:-1], top)


def lr_factor(step: int, recipe: Recipe) -> float:
    if step < recipe.warmup:
        return (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: the LM at `lm_learning_rate`, tuned vision blocks at
    `vision_learning_rate`, the rest (projector, box decoder) at `learning_rate`."""
    groups: dict[str, list] = {"lm": [], "vision": [], "rest": []}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            part = (
                "lm"
                if ".language_model." in "." + name
                else "vision"
                if name.startswith("model.vision_tower.")
                else "rest"
            )
            groups[part].append(parameter)
    rates = {
        "lm": recipe.lm_learning_rate,
        "rest": recipe.learning_rate,
        "vision": recipe.vision_learning_rate,
    }
    return torch.optim.AdamW(
        [
            {"params": groups[part], "lr": rates[part]}
            for part in ("lm", "rest", "vision")
            if groups[part] or part != "vision"
        ],
        weight_decay=0.01,
    )


def save_checkpoint(checkpoint: Path, model, optimizer, tuned: dict, state: dict) -> None:
    """The trainable weights (the frozen tower is the init's), the optimizer and `state`, written atomically."""
    trainable = {
        k: v for k, v in model.state_dict().items()
        if not k.startswith("model.vision_tower.") or any(k.startswith(p) for p in tuned)
    }  # fmt: skip
    torch.save(
        {"model": trainable, "optimizer": optimizer.state_dict(), **state}, checkpoint.with_suffix(".tmp")
    )
    checkpoint.with_suffix(".tmp").replace(checkpoint)


def train(recipe: Recipe, init: Path, cache_dir: Path, out: Path) -> None:
    from medrg import MedRGForReportGrounding, MedRGProcessor

    torch.manual_seed(recipe.seed)
    cache = torch.load(cache_dir / "cache.pt", weights_only=False)
    processor = MedRGProcessor.from_pretrained(str(init))
    prior = fit_prior(cache, processor.reader)
    processor.prior, processor.box_prior = prior, prior.to_dict()
    add_references(cache, prior, processor.reader)
    print(f"box prior: {len(prior.cells)} cells; findings with a prior box: "
          f"{sum(r is not None for e in cache['examples'] for r in e['references'])}/"
          f"{sum(len(e['references']) for e in cache['examples'])}", flush=True)  # fmt: skip
    checkpoint = out / "checkpoint.pt"
    model = MedRGForReportGrounding.from_pretrained(str(init))
    tuned = tuned_vision_blocks(model, recipe)
    optimizer = make_optimizer(model, recipe)
    bases = [group["lr"] for group in optimizer.param_groups]
    step, log = 0, []
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        step, log = state["step"], state["log"]
        print(f"resumed at step {step}")
    before = state.get("seconds", 0.0) if checkpoint.is_file() else 0.0
    rng = random.Random(recipe.seed * 1000 + step)
    pad_id = processor.tokenizer.pad_token_id
    started = time.perf_counter()
    model.train()
    model.model.vision_tower.eval()
    while step < recipe.steps:
        for group, base in zip(optimizer.param_groups, bases):
            group["lr"] = base * lr_factor(step, recipe)
        batch = make_batch(cache, pick_rows(cache, rng, recipe), rng, pad_id, recipe.reference_dropout)
        if tuned:
            batch["vision_maps"] = tuned_vision_maps(batch["vision_maps"], tuned, recipe)
        output = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % 25 == 0:
            parts = {k: round(float(getattr(output, k).detach()), 4) for k in ("loss", "lm_loss", "box_l1_loss", "box_giou_loss", "box_confidence_loss")}  # fmt: skip
            log.append({"step": step, **parts, "seconds": round(before + time.perf_counter() - started, 1)})
            print(json.dumps(log[-1]), flush=True)
        if step % recipe.save_every == 0 or step == recipe.steps:
            state = {"step": step, "log": log, "seconds": before + time.perf_counter() - started}
            save_checkpoint(checkpoint, model, optimizer, tuned, state)
    model.eval()
    final = out / "final"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    write_summary(recipe, cache_dir, out, before + time.perf_counter() - started, log)
    print(f"saved {final}")


def write_summary(recipe: Recipe, cache_dir: Path, out: Path, train_seconds: float, log: list) -> None:
    """`train_summary.json`: the recipe, the measured times and what the model card says of the training."""
    cache_file = cache_dir / "cache_summary.json"
    cache_seconds = json.loads(cache_file.read_text())["seconds"] if cache_file.is_file() else None
    train_seconds = round(train_seconds, 1)
    summary = {
        "recipe": recipe.__dict__,
        "train_seconds": train_seconds,
        "cache_seconds": cache_seconds,
        # what the model card says of this training (recipes/install_default_model.py copies it into metrics.json)
        "card": {
            "recipe": "`RECIPE.md` (`recipes/default_model.py`)",
            "data": "the ChestX-ray8 train part (599 images; template and GPT-written reports; each image in "
            f"{recipe.augmentations} zoom/shift/intensity variants"
            + (
                f", and mirrored with left and right swapped in report and answer in {recipe.flipped_augmentations}"
                " more where every finding names its side"
                if recipe.flipped_augmentations
                else ""
            )
            + f") + {recipe.synthcxr_examples} SynthCXR images "
            f"({100 * recipe.synthcxr_fraction:.0f} % of each batch); the LLaMA-written reports never",
            "initialisation": "ImageNet EfficientNet-Lite0 (frozen, 512 px); LM, tokenizer and phrase read-out from "
            "the previous default (trained from scratch with configs/default_model.yaml); box decoder from scratch",
            "training time": f"{recipe.steps} steps of batch {recipe.batch_size} in {train_seconds:.0f} s"
            + (f" + {cache_seconds:.0f} s of feature caching" if cache_seconds else "")
            + " on 2 shared CPU cores",
        },
        "log": log,
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("step", choices=("assemble", "cache", "train", "summary"))
    parser.add_argument("--start", default=str(ROOT / "runs" / "previous_default"))
    parser.add_argument("--run", default=str(RUN))
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--flipped-augmentations", type=int, default=Recipe.flipped_augmentations)
    parser.add_argument(
        "--reuse-cache", help="an earlier cache folder of this recipe: its features are reused"
    )
    parser.add_argument(
        "--tune-vision-from", type=int, default=Recipe.tune_vision_from,
        help="0: frozen tower; 11: its blocks after the stride-16 level train on the cached features",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = Recipe(
        steps=args.steps, flipped_augmentations=args.flipped_augmentations,
        tune_vision_from=args.tune_vision_from, seed=args.seed,
    )  # fmt: skip
    run = Path(args.run)
    if args.step == "assemble":
        assemble(Path(args.start), run / "init")
    elif args.step == "cache":
        build_cache(recipe, run / "init", run / "cache", Path(args.reuse_cache) if args.reuse_cache else None)
    elif args.step == "train":
        train(recipe, run / "init", run / "cache", run)
    else:  # rewrite train_summary.json from the last checkpoint
        state = torch.load(run / "checkpoint.pt", weights_only=False)
        seconds = state.get("seconds", state["log"][-1]["seconds"])
        write_summary(recipe, run / "cache", run, seconds, state["log"])


if __name__ == "__main__":
    main()
