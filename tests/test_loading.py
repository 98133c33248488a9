"""Loading model folders (`medrg.loading`): a broken or foreign folder gives one clear error naming the file,
and a folder's own code never runs without trust_remote_code."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from medrg.loading import ModelLoadError, check_safetensors, load_medrg


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    import medrg

    model, processor = medrg.build_tiny_medrg(seed=0)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(folder, target)
    return target


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def _drop_processor_config(folder: Path) -> None:
    (folder / "processor_config.json").unlink()


def _make_trainer_checkpoint(folder: Path) -> Path:
    checkpoint = folder.parent / "checkpoint-15"
    folder.rename(checkpoint)
    (checkpoint / "trainer_state.json").write_text("{}")
    return checkpoint


def _break_config_json(folder: Path) -> None:
    (folder / "config.json").write_text("{not json")


def _pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _drop_tensors(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    kept = {k: v for k, v in tensors.items() if "box_decoder" not in k}
    assert len(kept) < len(tensors)
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})


def _drop_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink(missing_ok=True)


FOLDER_CASES = [
    # (case, how to break a copy of a saved tiny MedRG, error message)
    ("truncated safetensors", _truncate_weights, r"model\.safetensors is truncated or corrupt"),
    ("missing processor_config.json", _drop_processor_config, r"processor_config\.json not found"),
    ("Trainer checkpoint-N folder", _make_trainer_checkpoint,
     r"checkpoint-15 is a Trainer training checkpoint.*medrg train --config CONFIG --resume.*final"),
    ("config.json not JSON", _break_config_json, r"config\.json is not valid JSON"),
    ("pickled weights only", _pickle_only, r"model\.safetensors not found \(found pytorch_model\.bin"),
    ("weights missing tensors", _drop_tensors, r"model\.safetensors.* does not (fit|match) .*missing.*box_decoder"),
    ("no tokenizer files", _drop_tokenizer, r"has no tokenizer"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "break_folder", "message"), FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_broken_model_folder_gives_one_error_naming_the_file(
    case, break_folder, message, saved_tiny, tmp_path
):
    folder = _copy(saved_tiny, tmp_path)
    folder = break_folder(folder) or folder
    with pytest.raises(ModelLoadError, match=message):
        load_medrg(folder)


def _bert_folder(path: Path) -> None:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    BertModel(config).save_pretrained(path)


def _gpt2_folder(path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(vocab_size=32, n_embd=8, n_layer=1, n_head=2, n_positions=16)).save_pretrained(
        path
    )


OTHER_FOLDER_CASES = [
    ("a BERT folder", _bert_folder, r"config\.json: model_type 'bert' is not a MedRG model"),
    ("a GPT-2 folder", _gpt2_folder, r"config\.json: model_type 'gpt2' is not a MedRG model"),
    ("a missing folder", None, r"model folder not found: .*nowhere"),
    ("a file instead of a folder", lambda p: p.write_text("x"), r"nowhere is a file; expected a MedRG model folder"),
    ("a folder without config.json", lambda p: p.mkdir(), r"nowhere/config\.json not found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "make", "message"), OTHER_FOLDER_CASES, ids=[c[0] for c in OTHER_FOLDER_CASES]
)
def test_not_a_medrg_folder_gives_one_error(case, make, message, tmp_path):
    path = tmp_path / "nowhere"
    if make is not None:
        make(path)
    with pytest.raises(ModelLoadError, match=message):
        load_medrg(path)


def test_safetensors_check_accepts_a_complete_file_and_names_a_cut_one(saved_tiny, tmp_path):
    check_safetensors(saved_tiny / "model.safetensors")  # complete: no error
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(ModelLoadError, match=r"cut\.safetensors is truncated or not a safetensors file"):
        check_safetensors(cut)


# ------------------------------------------------------------------------- remote code: never run a folder's own code without trust_remote_code
EVIL_CODE = """
import pathlib
pathlib.Path({marker!r}).write_text("the folder's code ran")
from transformers import PretrainedConfig, PreTrainedModel


class EvilConfig(PretrainedConfig):
    model_type = "evilmodel"


class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""


def _evil_folder(tmp_path: Path, saved_tiny: Path) -> tuple[Path, Path]:
    """A complete-looking folder of another model type whose auto_map points at code that writes a marker."""
    import torch
    from safetensors.torch import save_file

    folder, marker = tmp_path / "evil", tmp_path / "marker.txt"
    folder.mkdir()
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    config = {
        "model_type": "evilmodel",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(saved_tiny / name, folder / name)
    save_file({"weight": torch.zeros(1)}, folder / "model.safetensors")
    return folder, marker


def test_folder_code_does_not_run_without_trust_remote_code(saved_tiny, tmp_path, monkeypatch):
    folder, marker = _evil_folder(tmp_path, saved_tiny)
    with pytest.raises(ModelLoadError, match=r"evil\.py\); it was not run\. .*pass --trust-remote-code"):
        load_medrg(folder)
    assert not marker.exists()
    from medrg.cli import main

    with pytest.raises(SystemExit, match=r"^medrg evaluate: error: .*--trust-remote-code") as exit_info:
        main(
            ["evaluate", "--model", str(folder), "--dataset", "never-loaded", "--out", str(tmp_path / "out")]
        )
    assert "\n" not in str(exit_info.value.code)
    assert not marker.exists()
    # the flag is what gates it: with it, the folder's code runs (and this non-MedRG folder is then refused)
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    with pytest.raises(ModelLoadError):
        load_medrg(folder, trust_remote_code=True)
    assert marker.read_text() == "the folder's code ran"


def test_medrg_folder_with_own_code_loads_with_the_installed_code(saved_tiny, tmp_path):
    folder = _copy(saved_tiny, tmp_path)
    marker = tmp_path / "marker.txt"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "medrg"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(EVIL_CODE.format(marker=str(marker)))
    model, processor = load_medrg(folder)
    assert type(model).__module__.startswith("medrg.") and not marker.exists()
    assert type(processor).__name__ == "MedRGProcessor" and not model.training
