"""Sharded training on CPU: MedRG's FSDP wrap units (vision tower, LM decoder layers; the rest in the root unit) sharded with
torch's FSDP2 `fully_shard` over a 2-process gloo mesh train to the same losses as one process on the same global
batch, and a sharded (torch.distributed.checkpoint) checkpoint of model and optimizer resumes at another world
size. The committed accelerate / DeepSpeed configs parse with accelerate's and transformers' own parsers, and
sharding engines that cannot run as configured are refused before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, tiny_train_config

from medrg.training.config import load_config
from medrg.training.sharding import fsdp_wrap_class_names, fsdp_wrap_modules

STEPS, SAVE_AFTER, GLOBAL_BATCH, MICRO_BATCH = 4, 2, 4, 2
# float32 sums over 2 ranks (reduce-scatter) vs 1 process (local sum) differ in rounding only
LOSS_TOLERANCE = 1e-5

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import medrg
    from medrg.processing.data import load_grounding_dataset
    from medrg.training.collator import MedRGDataCollator
    from medrg.training.sharding import fsdp_wrap_modules

    STEPS, SAVE_AFTER, GLOBAL_BATCH, MICRO_BATCH = {constants}
    mode, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    rows = list(load_grounding_dataset("synthcxr", examples_per_split={{"train": STEPS * GLOBAL_BATCH}},
                                        image_size=64, seed=0, progress=False)["train"])

    def sharded_model():
        model, processor = medrg.build_tiny_medrg(seed=0)
        model.train()
        mesh = init_device_mesh("cpu", (world,))
        for module in fsdp_wrap_modules(model):
            fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
        return model, optimizer, MedRGDataCollator(processor)

    def run(model, optimizer, collate, steps):
        # each step: this rank's share of the global batch in micro-batches of MICRO_BATCH rows, the loss of each
        # micro-batch weighted equally (as Trainer's gradient accumulation); FSDP averages the gradients over ranks
        losses = {{}}
        per_rank = GLOBAL_BATCH // world
        for step in steps:
            start = step * GLOBAL_BATCH + rank * per_rank
            micro = [rows[i : i + MICRO_BATCH] for i in range(start, start + per_rank, MICRO_BATCH)]
            total = 0.0
            for part in micro:
                loss = model(**collate(part)).loss / len(micro)
                loss.backward()
                total += float(loss.detach())
            optimizer.step()
            optimizer.zero_grad()
            summed = torch.tensor([total])
            dist.all_reduce(summed)
            losses[step + 1] = float(summed) / world
        return losses

    result = {{}}
    if mode in ("train", "reference"):
        model, optimizer, collate = sharded_model()
        result["losses"] = run(model, optimizer, collate, range(SAVE_AFTER))
        if mode == "train":
            model_state, optimizer_state = get_state_dict(model, optimizer)
            dcp.save({{"model": model_state, "optimizer": optimizer_state}}, checkpoint_id=os.path.join(out, "ckpt"))
            result["files"] = sorted(os.listdir(os.path.join(out, "ckpt")))
        result["losses"].update(run(model, optimizer, collate, range(SAVE_AFTER, STEPS)))
    if mode == "reference":  # then resume the 2-process checkpoint on this world size
        model, optimizer, collate = sharded_model()
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {{"model": model_state, "optimizer": optimizer_state}}
        dcp.load(state, checkpoint_id=os.path.join(out, "ckpt"))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        result["resumed"] = run(model, optimizer, collate, range(SAVE_AFTER, STEPS))
    result["world"] = world
    if rank == 0:
        with open(os.path.join(out, mode + ".json"), "w") as handle:
            json.dump(result, handle)
    dist.barrier()  # no rank leaves while another still talks to it
    dist.destroy_process_group()
    """
)


def launch(tmp_path: Path, mode: str, processes: int) -> dict:
    driver = tmp_path / "driver.py"
    constants = f"{STEPS}, {SAVE_AFTER}, {GLOBAL_BATCH}, {MICRO_BATCH}"
    driver.write_text(DRIVER.format(constants=constants))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    result = subprocess.run(
        [*command, str(driver), mode, str(tmp_path)], env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((tmp_path / f"{mode}.json").read_text())


def test_fsdp2_two_processes_match_one_and_the_sharded_checkpoint_resumes_on_one(tmp_path):
    sharded = launch(tmp_path, "train", processes=2)
    single = launch(tmp_path, "reference", processes=1)
    assert sharded["world"] == 2 and single["world"] == 1
    assert any(name.endswith(".distcp") for name in sharded["files"])  # one shard file per rank
    steps = [str(step) for step in range(1, STEPS + 1)]
    assert sorted(sharded["losses"]) == sorted(single["losses"]) == steps
    gap = max(abs(sharded["losses"][step] / single["losses"][step] - 1) for step in steps)
    print(f"FSDP2 2 processes vs 1: largest relative loss difference {gap:.2e}")
    assert gap <= LOSS_TOLERANCE
    assert single["losses"]["1"] != pytest.approx(single["losses"][steps[-1]], rel=1e-3)  # it trains
    # the checkpoint the two processes wrote after step 2, resumed by one process: the same steps 3 and 4
    resumed = single["resumed"]
    assert sorted(resumed) == steps[SAVE_AFTER:]
    for step in resumed:
        assert resumed[step] == pytest.approx(sharded["losses"][step], rel=LOSS_TOLERANCE)


def test_wrap_units_are_the_vision_tower_the_lm_layers_and_the_box_decoder(tiny):
    model, _ = tiny
    modules = fsdp_wrap_modules(model)
    assert modules[0] is model.model.vision_tower and modules[-1] is model.box_decoder
    assert modules[1:-1] == list(model.model.language_model.get_decoder().layers) and len(modules) == 4
    assert fsdp_wrap_class_names(model) == ["ResNetModel", "LlamaDecoderLayer", "MedRGBoxDecoder"]
    with pytest.raises(ValueError, match="Linear is not a MedRG model"):
        fsdp_wrap_modules(__import__("torch").nn.Linear(2, 2))


def test_fsdp_on_cpu_is_refused_not_silently_ddp(tmp_path, monkeypatch):
    """accelerate turns FSDP on CPU into plain DDP without a word (its FSDP state is set for accelerator devices
    only; a 2-process gloo run with `fsdp` trains DDP): MedRG refuses it, from the config or a launch config."""
    config = tiny_train_config(tmp_path, training={"fsdp": True, "fsdp_config": {"version": 2}})
    with pytest.raises(ValueError, match="accelerate runs FSDP on accelerators only"):
        load_config(config)
    monkeypatch.setenv(
        "ACCELERATE_USE_FSDP", "true"
    )  # what `accelerate launch` with configs/accelerate_fsdp.yaml sets
    with pytest.raises(ValueError, match="an accelerate FSDP config"):
        load_config(tiny_train_config(tmp_path))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    # without deepspeed installed TrainingArguments itself refuses (with it: "DeepSpeed ZeRO needs its accelerator")
    with pytest.raises(
        ValueError, match="DeepSpeed ZeRO needs its accelerator|deepspeed>=0.9.3' distribution"
    ):
        load_config(tiny_train_config(tmp_path))


def test_committed_sharding_configs_parse_with_accelerates_parsers():
    """accelerate's own parsers read the launch configs and the ZeRO-3 JSON (DeepSpeed is not installed here, and
    transformers' DeepSpeed config parser needs it; the GPU check runs the engine). Every "auto" left in the JSON is
    one that Trainer fills from TrainingArguments: none needs the model's hidden size, which MedRG's composite
    config does not have."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils.deepspeed import HfDeepSpeedConfig

    fsdp = load_config_from_file(str(REPO_ROOT / "configs" / "accelerate_fsdp.yaml"))
    assert fsdp.distributed_type.value == "FSDP" and fsdp.mixed_precision == "bf16"
    assert fsdp.fsdp_config["fsdp_version"] == 2
    assert fsdp.fsdp_config["fsdp_reshard_after_forward"] is True
    assert fsdp.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert fsdp.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert "fsdp_transformer_layer_cls_to_wrap" not in fsdp.fsdp_config  # filled in from the model
    zero3 = load_config_from_file(str(REPO_ROOT / "configs" / "accelerate_deepspeed_zero3.yaml"))
    assert zero3.distributed_type.value == "DEEPSPEED"
    assert zero3.deepspeed_config["deepspeed_config_file"] == "configs/deepspeed_zero3.json"
    ds = HfDeepSpeedConfig(str(REPO_ROOT / "configs" / "deepspeed_zero3.json"))
    assert ds.is_zero3() and not ds.is_offload()
    assert (
        ds.get_value("zero_optimization.stage3_gather_16bit_weights_on_model_save") is True
    )  # export needs it

    def auto_keys(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from auto_keys(value, f"{prefix}{key}.")
            elif value == "auto":
                yield prefix + key

    filled_by_trainer = {
        "bf16.enabled",
        "gradient_accumulation_steps",
        "gradient_clipping",
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
    }
    assert set(auto_keys(ds.config)) == filled_by_trainer


def test_gpu_check_dry_run_writes_its_report(tmp_path):
    """`python benchmarks/gpu_check.py --dry-run`: the GPU check's whole path (train, export, held-out grounding,
    inference sweep, report) on the CPU with the tiny model."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "gpu_check.py"),
        "--dry-run",
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    training = report["training"]
    assert report["dry_run"] is True and training["device"] == "cpu" and training["steps"] == 3
    assert training["train_samples_per_second"] > 0 and training["timed_tokens"] > 0
    assert training["parameters"] == 674_494  # the tiny model
    assert 0 < report["mfu_percent"] < 100 and report["peak_source"] == "measured bf16 matmul on cpu"
    assert set(training["held_out_metrics"]) == {"validation"}
    assert all(row["samples_per_s"] > 0 for row in report["inference"]["rows"])
    assert "| train samples/s |" in (tmp_path / "gpu_check.md").read_text()


def test_memory_table_rows_follow_the_accounting():
    """The docs/training.md table's generator on the tiny config: counted parameters and the stated formulas."""
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks.memory_table import GPU_GIB, USABLE, build_rows, markdown

    (row,) = build_rows(["tiny"])
    assert row["parameters"] == row["trained"] == 674_494 and not row["lora"]
    s, h, a, layers, vocab = row["sequence"], row["hidden"], row["heads"], row["layers"], row["vocab"]
    assert (s, layers) == (384, 2)
    assert row["state_bytes"] == 16 * 674_494  # fp32 weights 4 + gradients 4 + Adam 8 per trained parameter
    per_layer = s * h * (34 + 5 * a * s / h)
    assert row["activation_bytes_per_sample"] == pytest.approx(layers * per_layer + 6 * s * vocab)
    assert row["checkpointed_activation_bytes_per_sample"] < row["activation_bytes_per_sample"]
    budget = GPU_GIB * 2**30 * USABLE
    assert row["batch_1gpu"] == int((budget - row["state_bytes"]) // row["activation_bytes_per_sample"])
    assert "| tiny (`configs/tiny.yaml`, 384 tokens) | 0.674 M | 0.674 M |" in markdown([row])


TRAIN_DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from medrg.training.train import train

    config = json.loads(sys.argv[1])
    summary = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        losses = {h["step"]: h["loss"] for h in summary["log_history"] if "loss" in h}
        with open(sys.argv[2], "w") as handle:
            json.dump({"losses": losses, "world": int(os.environ.get("WORLD_SIZE", "1")),
                       "resumed_from": summary.get("resumed_from")}, handle)
    """
)


def train_processes(tmp_path: Path, name: str, config: dict, processes: int) -> dict:
    driver = tmp_path / "train_driver.py"
    driver.write_text(TRAIN_DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    out = tmp_path / f"{name}.json"
    result = subprocess.run(
        [*command, str(driver), json.dumps(config), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def ddp_config(output_dir: Path, per_device: int, accumulation: int, **training) -> dict:
    config = tiny_train_config(
        output_dir,
        train_examples=48,
        training={
            "max_steps": 6,
            "logging_steps": 1,
            "per_device_train_batch_size": per_device,
            "gradient_accumulation_steps": accumulation,
            "ddp_backend": "gloo",
            "save_strategy": "steps",
            "save_steps": 3,
            **training,
        },
    )
    config["data"]["augmentation"] = None
    return config


def test_medrg_train_two_processes_match_one_with_accumulation_and_resume_on_one(tmp_path):
    """`medrg train`'s path under torchrun (DDP over gloo): 2 processes x batch 2 give the losses of 1 process x
    batch 2 x accumulation 2 (the same global batch of 4, the same rows), and the 2-process checkpoint-3 resumed
    by 1 process continues the same curve."""
    two = train_processes(tmp_path, "two", ddp_config(tmp_path / "two", 2, 1), processes=2)
    one = train_processes(tmp_path, "one", ddp_config(tmp_path / "one", 2, 2), processes=1)
    assert two["world"] == 2 and one["world"] == 1
    assert sorted(two["losses"]) == sorted(one["losses"]) == [str(s) for s in range(1, 7)]
    gap = max(abs(two["losses"][step] / loss - 1) for step, loss in one["losses"].items())
    print(f"DDP 2 processes vs 1: largest relative loss difference {gap:.2e}")
    assert gap <= LOSS_TOLERANCE
    checkpoint = str(tmp_path / "two" / "checkpoint-3")
    resumed_config = ddp_config(tmp_path / "resumed", 2, 2, resume_from_checkpoint=checkpoint)
    resumed = train_processes(tmp_path, "resumed", resumed_config, processes=1)
    assert resumed["resumed_from"] == "checkpoint-3"
    for step in ("4", "5", "6"):
        assert resumed["losses"][step] == pytest.approx(one["losses"][step], rel=LOSS_TOLERANCE)


def test_streamed_data_is_split_per_process_and_each_position_is_checkpointed(tmp_path):
    """2 processes on a streamed SynthCXR of 24 rows (24 shards): each reads its own 12 (`split_dataset_by_node`),
    and checkpoint-4 holds each rank's position: 4 steps x 4 rows = 16 rows, 4 into the second pass over its 12
    (a rank reading all 24 rows would be at row 16 of its first pass)."""
    from medrg.training.checkpoints import checkpoint_problem
    from medrg.training.streaming import STREAM_STATE_FILE

    config = ddp_config(tmp_path / "streamed", 4, 1, max_steps=4, save_steps=4)
    config["data"]["sources"][0]["options"].update(
        streaming=True, examples_per_split={"train": 24, "validation": 4}
    )
    result = train_processes(tmp_path, "streamed", config, processes=2)
    assert result["world"] == 2 and sorted(result["losses"]) == ["1", "2", "3", "4"]
    checkpoint = tmp_path / "streamed" / "checkpoint-4"
    assert checkpoint_problem(checkpoint) is None
    for rank in (0, 1):
        position = json.loads((checkpoint / STREAM_STATE_FILE.format(rank=rank)).read_text())
        assert position == {"pass": 1, "rows": 4, "rank": rank, "world_size": 2}
