"""2-process DDP training on CPU with torchrun (gloo): both ranks end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import tiny_train_config

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    from medrg.training.train import train

    config = json.loads(sys.argv[1])
    summary = train(config)
    rank = int(os.environ["RANK"])
    with open(os.path.join(config["training"]["output_dir"], f"rank{rank}.json"), "w") as f:
        json.dump({"sha256": summary["parameters_sha256"], "all": summary["weights_sha256"], "step": summary["global_step"],
                   "world_size": int(os.environ["WORLD_SIZE"])}, f)
    """
)


def test_torchrun_two_process_ddp_same_weights(tmp_path):
    output_dir = tmp_path / "ddp"
    config = tiny_train_config(
        output_dir,
        training={"ddp_find_unused_parameters": True, "ddp_backend": "gloo"},
    )
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(driver),
        json.dumps(config),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((output_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and r["step"] == 4 for r in ranks)
    # every parameter is identical on both ranks (buffers such as BatchNorm running statistics are updated by
    # each rank's own last batch under DDP; rank 0's are saved)
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    assert (output_dir / "final" / "model.safetensors").is_file()  # rank 0 exported
