"""The benchmark harness (`benchmarks/run_all.py`): a dry run writes every file with the documented schema and
finite numbers (never timing thresholds); the helpers it relies on measure what they claim."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, bfloat16_attention_runs

sys.path.insert(0, str(REPO_ROOT))

from benchmarks.harness.common import ForcedAnswer, finite_numbers, report_with_findings, summarize  # noqa: E402
from benchmarks.harness.inference import SPLIT_PARTS, StepTimer  # noqa: E402

SECTIONS = ("inference", "scaling", "roofline", "gpu")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # the accelerator section's dtype (bf16 by default) in float32 where torch cannot run bf16 attention on this CPU
    dtype = [] if bfloat16_attention_runs() else ["--dtype", "fp32"]
    result = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--dry-run", "--out", str(out), *dtype],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _load(out, name: str) -> dict:
    return json.loads((out / f"bench_{name}.json").read_text())


def test_dry_run_writes_every_file(dry_run):
    for section in SECTIONS:
        for suffix in ("json", "md", "png"):
            path = dry_run / f"bench_{section}.{suffix}"
            assert path.is_file() and path.stat().st_size > 0, path
        assert (dry_run / f"bench_{section}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("bench_targets.json", "bench_targets.md", "bench_run.json"):
        assert (dry_run / name).is_file()


def test_every_section_records_load_and_finite_numbers(dry_run):
    for section in SECTIONS:
        payload = _load(dry_run, section)
        assert payload["section"] == section
        assert payload["settings"]["dry_run"] is True
        for key in ("machine_start", "machine_end"):
            load = payload[key]["load_average"]
            assert len(load) == 3 and all(math.isfinite(v) and v >= 0 for v in load)
            assert payload[key]["torch_threads"] >= 1
        assert finite_numbers(payload["data"]), section


def test_inference_schema(dry_run):
    default = _load(dry_run, "inference")["data"]["models"]["default"]
    for key in ("import_medrg_s", "pipeline_load_s", "first_call_s", "medrg_help_s", "cold_start_total_s"):
        assert default["cold_start"][key] > 0
    assert 0 < default["batch1"]["p50_ms"] <= default["batch1"]["p95_ms"]
    assert default["batch_large_per_report"]["p50_ms"] > 0
    assert default["throughput"]["batch_large_over_batch1"] > 0
    for key in ("split_batch1_ms", "split_batch_large_ms"):
        split = default[key]
        assert set(SPLIT_PARTS) <= set(split)
        assert all(split[part] >= 0 for part in SPLIT_PARTS)
        assert sum(split["share_percent"].values()) == pytest.approx(100, abs=0.1)
        assert split["generated_tokens"] >= 1
    memory = default["memory"]
    assert memory["calls_long"] > memory["calls_short"] > 0 and memory["peak_rss_mib"] > 0


def test_scaling_schema(dry_run):
    data = _load(dry_run, "scaling")["data"]
    assert [r["findings"] for r in data["findings"]] == [1, 2]
    for row in data["findings"]:
        # the forced answer grounds every finding, in one generation and in the two-stage way alike
        assert row["forced"]["one_generation_grounded"] == row["findings"]
        assert row["forced"]["two_stage_grounded"] == row["findings"]
        for mode in ("model", "forced"):
            assert row[mode]["one_generation_ms"] > 0 and row[mode]["two_stage_ms"] > 0
    lengths = [r["prompt_tokens"] for r in data["report_length"]]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert [r["image_px"] for r in data["image_size"]] == [256, 512]
    assert all(r["samples_per_s"] > 0 for r in data["training"])


def test_roofline_and_gpu_schema(dry_run):
    roofline = _load(dry_run, "roofline")["data"]
    assert roofline["matmul"]["median_gflops"] > 0
    assert [r["batch"] for r in roofline["rows"]] == [1, 2]
    assert all(r["flops_per_call"] > 0 and r["fraction_of_matmul"] > 0 for r in roofline["rows"])
    # FLOPs per call grow with the batch (the same report twice costs about twice)
    assert roofline["rows"][1]["flops_per_call"] > 1.5 * roofline["rows"][0]["flops_per_call"]
    assert "Python/framework overhead (wall - ops)" in roofline["breakdown_batch1"]["categories_ms"]
    gpu = _load(dry_run, "gpu")["data"]
    dtype = "bf16" if bfloat16_attention_runs() else "fp32"  # as the dry run was asked
    assert gpu["device"] == "cpu" and gpu["dtype"] == dtype and gpu["peak_tflops"] > 0
    assert all(r["samples_per_s"] > 0 and r["mfu_percent"] > 0 for r in gpu["rows"])


def test_targets_and_readme_table(dry_run):
    rows = _load(dry_run, "targets")["rows"]
    names = " ".join(r["target"] for r in rows)
    for needle in (
        "box decoder",
        "p50",
        "import medrg",
        "medrg --help",
        "RSS growth",
        "matmul",
        "throughput",
    ):
        assert needle in names
    assert all(r["met"] in (True, False) for r in rows)
    result = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--readme-table", "--out", str(dry_run)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("## Benchmarks")
    assert "### Targets" in result.stdout and "| target | measured | met |" in result.stdout
    for section in ("### Inference", "### Scaling", "### Roofline", "bench_gpu.png"):
        assert section in result.stdout


def test_summarize_percentiles():
    stats = summarize([0.004, 0.001, 0.002, 0.003, 0.005])
    assert stats["p50_ms"] == pytest.approx(3.0)
    assert stats["p95_ms"] == pytest.approx(4.8)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["n"] == 5
    with pytest.raises(ValueError, match="at least one"):
        summarize([])


def test_finite_numbers():
    assert finite_numbers({"a": [1, 2.5, {"b": "text", "c": True}]})
    assert not finite_numbers({"a": [1, float("nan")]})
    assert not finite_numbers({"a": None})


def test_forced_answer_grounds_every_phrase_and_the_split_sees_each_step_once():
    from transformers import LogitsProcessorList

    import medrg

    model, processor = medrg.build_tiny_medrg(seed=0)
    model.eval()
    phrases = ["right apical pulmonary nodule", "left pleural effusion", "cardiomegaly"]
    image = torch.zeros(64, 64, dtype=torch.uint8)
    inputs = processor(images=image, text=report_with_findings(3), return_tensors="pt")
    answer = processor._answer_ids(phrases, 0)
    timer = StepTimer(model)
    try:
        output = model.generate_grounding(
            inputs["input_ids"],
            inputs["pixel_values"],
            inputs["attention_mask"],
            max_new_tokens=len(answer) + 1,
            logits_processor=LogitsProcessorList(
                [ForcedAnswer(answer, inputs["input_ids"].shape[1], processor.tokenizer.eos_token_id)]
            ),
        )
    finally:
        timer.remove()
    generated = output.sequences[0, output.prompt_length :][output.generated_mask[0].bool()].tolist()
    assert generated == answer
    assert int(output.box_mask.sum()) == 3 and bool(output.finished[0])
    # the image is encoded once per call; one LM forward per generated token and no second grounding pass (the
    # <BOX> states come from the generation's steps); one box-decoder pass for all <BOX>
    assert len(timer.spans["vision"]) == 1
    assert len(timer.spans["top"]) == len(answer)
    assert len(timer.spans["box_decoder"]) == 1
