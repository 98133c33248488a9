"""Section 2, scaling: latency vs number of findings (MedRG's one generation vs the two-stage way: one
grounding call per finding phrase), vs report length, vs input image size; training samples/s vs batch size
and torch threads (tiny model, a few optimiser steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .common import (
    FINDING_PHRASES,
    ForcedAnswer,
    Settings,
    example_image,
    load_model,
    load_now,
    md_table,
    new_figure,
    report_with_findings,
    save_figure,
    summarize,
    time_calls,
)


def report_for(phrases: list[str], extra_sentences: int = 0) -> str:
    """A report stating exactly `phrases` (in findings and impression)."""
    from .common import NORMAL_SENTENCES

    normal = [NORMAL_SENTENCES[i % len(NORMAL_SENTENCES)] for i in range(extra_sentences)]
    body = " ".join([f"There is {p}." for p in phrases] + normal)
    impression = " ".join(f"{i + 1}. {p[0].upper() + p[1:]}." for i, p in enumerate(phrases))
    return f"FINDINGS: Portable AP chest radiograph. {body}\n\nIMPRESSION: {impression}"


class GroundingCall:
    """One report through the pipeline's steps (processor -> `generate_grounding` -> `post_process_grounding`),
    optionally with a forced answer, or (`guided=True`, the pipeline's default) under the report guide
    (`processor(..., guided=True)`: the answer names the findings the report states, decoded jump-forward). Returns
    the number of generated `<BOX>` (grounded findings)."""

    def __init__(self, model, processor, device: str = "cpu", max_new_tokens: int = 64):
        self.model, self.processor, self.device = model, processor, device
        self.max_new_tokens = max_new_tokens

    def __call__(
        self, image, report: str, forced_phrases: list[str] | None = None, guided: bool = False
    ) -> int:
        max_new_tokens = self.max_new_tokens
        inputs = self.processor(images=image, text=report, return_tensors="pt", guided=guided)
        # guided: the budget raised to what the guided answer needs, as the pipeline does
        inputs["max_new_tokens"] = max(max_new_tokens, inputs["max_new_tokens"]) if guided else max_new_tokens
        if forced_phrases is not None:
            from transformers import LogitsProcessorList

            answer = self.processor._answer_ids(forced_phrases, 0)
            inputs["logits_processor"] = LogitsProcessorList(
                [ForcedAnswer(answer, inputs["input_ids"].shape[1], self.processor.tokenizer.eos_token_id)]
            )
            inputs["max_new_tokens"] = max(max_new_tokens, len(answer) + 1)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        output = self.model.generate_grounding(**inputs)
        self.processor.post_process_grounding(output, target_sizes=inputs["image_sizes"])
        return int(output.box_mask.sum())


def findings_scaling(settings: Settings, call: GroundingCall, image) -> list[dict[str, Any]]:
    counts = [1, 2] if settings.dry_run else ([1, 2, 5, 10] if settings.quick else list(range(1, 11)))
    reps = settings.reps(7, 3, 1)
    rows = []
    for n in counts:
        phrases = list(FINDING_PHRASES[:n])
        report = report_for(phrases)
        row: dict[str, Any] = {"findings": n}
        for mode, forced, guided in (
            ("model", False, False),
            ("forced", True, False),
            ("guided", False, True),
        ):
            grounded = call(image, report, phrases if forced else None, guided)
            one = time_calls(lambda: call(image, report, phrases if forced else None, guided), reps, warmup=0)  # noqa: B023
            two_grounded = [call(image, report_for([p]), [p] if forced else None, guided) for p in phrases]

            def two_stage(forced=forced, guided=guided, phrases=phrases):
                for p in phrases:
                    call(image, report_for([p]), [p] if forced else None, guided)

            two = time_calls(two_stage, max(reps // 2, 1), warmup=0)
            row[mode] = {
                "one_generation_ms": summarize(one)["p50_ms"],
                "two_stage_ms": summarize(two)["p50_ms"],
                "one_generation_grounded": grounded,
                "two_stage_grounded": sum(two_grounded),
            }
            row[mode]["two_stage_over_one"] = round(
                row[mode]["two_stage_ms"] / row[mode]["one_generation_ms"], 3
            )
        row["load_1min"] = load_now()
        rows.append(row)
    return rows


def report_length_scaling(settings: Settings, call: GroundingCall, image) -> list[dict[str, Any]]:
    # about 13 tokens per sentence: 16 extra sentences still fit the default processor's max_length (384)
    extras = [0, 4] if settings.dry_run else ([0, 8, 16] if settings.quick else [0, 4, 8, 12, 16])
    reps = settings.reps(7, 3, 1)
    rows = []
    phrases = list(FINDING_PHRASES[:2])
    for extra in extras:
        report = report_for(phrases, extra)
        tokens = int(call.processor(images=image, text=report, return_tensors="pt")["input_ids"].shape[1])
        grounded = call(image, report)
        model_ms = summarize(time_calls(lambda: call(image, report), reps, warmup=0))["p50_ms"]  # noqa: B023
        forced_ms = summarize(time_calls(lambda: call(image, report, phrases), reps, warmup=0))["p50_ms"]  # noqa: B023
        rows.append(
            {
                "extra_sentences": extra,
                "prompt_tokens": tokens,
                "model_ms": model_ms,
                "forced_2_findings_ms": forced_ms,
                "grounded": grounded,
                "load_1min": load_now(),
            }
        )
    return rows


def image_size_scaling(settings: Settings, call: GroundingCall, image) -> list[dict[str, Any]]:
    sizes = (
        [256, 512]
        if settings.dry_run
        else ([256, 1024, 3000] if settings.quick else [256, 512, 1024, 2048, 3000])
    )
    reps = settings.reps(7, 3, 1)
    report = report_with_findings(2)
    rows = []
    for size in sizes:
        resized = image.resize((size, size))
        processing = time_calls(
            lambda resized=resized: call.processor.image_processor(resized, return_tensors="pt"), reps
        )
        rows.append(
            {
                "image_px": size,
                "latency_ms": summarize(
                    time_calls(lambda resized=resized: call(resized, report, list(FINDING_PHRASES[:2])), reps)
                )["p50_ms"],
                "image_processing_ms": summarize(processing)["p50_ms"],
                "load_1min": load_now(),
            }
        )
    return rows


def training_scaling(settings: Settings) -> list[dict[str, Any]]:
    """samples/s of forward + backward + AdamW step of the tiny model (`medrg.build_tiny_medrg`) on batches built
    by `medrg.training`'s collator path (the processor with findings), per batch size and thread count."""
    from medrg import build_tiny_medrg

    batches = [1, 4] if settings.dry_run else ([1, 8] if settings.quick else [1, 4, 8, 16])
    threads = [1] if settings.dry_run else sorted({1, torch.get_num_threads()})
    steps = settings.reps(5, 3, 1)
    image = example_image().resize((64, 64))
    finding = [{"phrase": FINDING_PHRASES[0], "boxes": [[10, 10, 30, 30]]}]
    original_threads = torch.get_num_threads()
    rows = []
    try:
        for thread_count in threads:
            torch.set_num_threads(thread_count)
            for batch in batches:
                model, processor = build_tiny_medrg(seed=0)
                model.train()
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
                inputs = processor(
                    images=[image] * batch,
                    text=[report_with_findings(1)] * batch,
                    findings=[finding] * batch,
                    return_tensors="pt",
                )
                inputs.pop("image_sizes", None)

                def step(model=model, optimizer=optimizer, inputs=inputs):
                    loss = model(**inputs).loss
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

                durations = time_calls(step, steps, warmup=1)
                rows.append(
                    {
                        "threads": thread_count,
                        "batch_size": batch,
                        "steps": steps,
                        "samples_per_s": round(batch * steps / sum(durations), 3),
                        "step_ms_p50": summarize(durations)["p50_ms"],
                        "load_1min": load_now(),
                    }
                )
    finally:
        torch.set_num_threads(original_threads)
    return rows


def findings_table(findings: list[dict[str, Any]]) -> str:
    """The markdown table of latency vs findings: one generation vs two-stage, per mode (model, forced, guided)."""
    finding_rows = [
        [
            r["findings"],
            r["model"]["one_generation_ms"],
            r["model"]["one_generation_grounded"],
            r["model"]["two_stage_ms"],
            r["model"]["two_stage_grounded"],
            r["model"]["two_stage_over_one"],
            r["forced"]["one_generation_ms"],
            r["forced"]["two_stage_ms"],
            r["forced"]["two_stage_over_one"],
            r["guided"]["one_generation_ms"],
            r["guided"]["one_generation_grounded"],
            r["guided"]["two_stage_ms"],
            r["guided"]["two_stage_over_one"],
            r["load_1min"],
        ]
        for r in findings
    ]
    return md_table(
        [
            "findings",
            "one-gen ms",
            "grounded",
            "two-stage ms",
            "grounded (2-stage)",
            "2-stage / one-gen",
            "forced one-gen ms",
            "forced two-stage ms",
            "forced 2-stage / one-gen",
            "guided one-gen ms",
            "guided grounded",
            "guided two-stage ms",
            "guided 2-stage / one-gen",
            "load",
        ],
        finding_rows,
    )


def render_markdown(data: dict[str, Any]) -> str:
    """The section's markdown: the findings table, then latency vs report length, vs image size, and training."""
    length, sizes, training = data["report_length"], data["image_size"], data["training"]
    return "\n\n".join(
        [
            "## Scaling",
            "Latency (p50 ms) vs findings in the report. `model`: what the model writes (grounded = generated "
            "`<BOX>`); `forced`: the answer is forced to list every finding with its `<BOX>` (all grounded); "
            "`guided`: the pipeline's default, report-guided decoding (jump-forward: forced runs in one forward). "
            "Two-stage = one grounding call per finding phrase (a single-finding sub-report each).",
            findings_table(data["findings"]),
            "Latency vs report length (2 findings):",
            md_table(
                ["extra sentences", "prompt tokens", "model ms", "forced ms", "grounded", "load"],
                [
                    [
                        r["extra_sentences"],
                        r["prompt_tokens"],
                        r["model_ms"],
                        r["forced_2_findings_ms"],
                        r["grounded"],
                        r["load_1min"],
                    ]
                    for r in length
                ],
            ),
            "Latency vs input image size (square, 2 forced findings; the image is letterboxed to the model size):",
            md_table(
                ["image px", "latency ms", "image processing ms", "load"],
                [[r["image_px"], r["latency_ms"], r["image_processing_ms"], r["load_1min"]] for r in sizes],
            ),
            "Training (tiny model, forward + backward + AdamW):",
            md_table(
                ["threads", "batch", "samples/s", "step p50 ms", "load"],
                [
                    [r["threads"], r["batch_size"], r["samples_per_s"], r["step_ms_p50"], r["load_1min"]]
                    for r in training
                ],
            ),
        ]
    )


def plot(data: dict[str, Any], path: Path) -> Path:
    """Write the section's figure to `path`: ms per report vs findings (one generation and two-stage per mode), vs
    prompt tokens, vs image side, and training samples/s vs batch size per thread count."""
    findings, length = data["findings"], data["report_length"]
    sizes, training = data["image_size"], data["training"]
    figure, axes = new_figure(4, width=4.2)
    xs = [r["findings"] for r in findings]
    for mode, style in (("model", "-"), ("forced", "--"), ("guided", ":")):
        axes[0].plot(
            xs,
            [r[mode]["one_generation_ms"] for r in findings],
            style,
            marker="o",
            label=f"one generation ({mode})",
        )
        axes[0].plot(
            xs, [r[mode]["two_stage_ms"] for r in findings], style, marker="s", label=f"two-stage ({mode})"
        )
    axes[0].set_xlabel("findings in report")
    axes[0].set_ylabel("ms per report")
    axes[0].legend(fontsize=6)
    axes[1].plot(
        [r["prompt_tokens"] for r in length], [r["model_ms"] for r in length], marker="o", label="model"
    )
    axes[1].plot(
        [r["prompt_tokens"] for r in length],
        [r["forced_2_findings_ms"] for r in length],
        marker="s",
        label="forced",
    )
    axes[1].set_xlabel("prompt tokens")
    axes[1].legend(fontsize=6)
    axes[2].plot([r["image_px"] for r in sizes], [r["latency_ms"] for r in sizes], marker="o")
    axes[2].set_xlabel("image side (px)")
    for thread_count in sorted({r["threads"] for r in training}):
        sel = [r for r in training if r["threads"] == thread_count]
        axes[3].plot(
            [r["batch_size"] for r in sel],
            [r["samples_per_s"] for r in sel],
            marker="o",
            label=f"{thread_count} thread(s)",
        )
    axes[3].set_xlabel("training batch size")
    axes[3].set_ylabel("samples/s")
    axes[3].legend(fontsize=6)
    return save_figure(figure, path)


def run(settings: Settings) -> tuple[dict[str, Any], str, list[Path]]:
    """Measure latency vs findings, report length and image size with the model, then training throughput with the
    tiny model; returns the data, the markdown and the figure."""
    model, processor, _ = load_model(settings.model_dir)
    call = GroundingCall(model, processor, max_new_tokens=settings.max_new_tokens)
    image = example_image()
    findings = findings_scaling(settings, call, image)
    length = report_length_scaling(settings, call, image)
    sizes = image_size_scaling(settings, call, image)
    training = training_scaling(settings)
    data = {"findings": findings, "report_length": length, "image_size": sizes, "training": training}
    return data, render_markdown(data), [plot(data, settings.out_dir / "bench_scaling.png")]
