"""Model registry: features/head split, head replacement and ImageNet-weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
import torch
import torchvision.models as tvm

from pretrain_knowledge import models as M

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32), (1, 12)])
def test_small_cnn_shapes(channels, size):
    torch.manual_seed(0)
    model = M.build_model("small_cnn", 7, in_channels=channels, image_size=size).eval()
    x = torch.randn(4, channels, size, size)
    feats = model.features(x)
    assert feats.shape == (4, model.feature_dim)
    logits = model(x)
    assert logits.shape == (4, 7)
    # forward is exactly head ∘ features: the probe reads the same representation the head sees.
    assert torch.equal(logits, model.head(feats))
    assert model.config == {
        "arch": "small_cnn",
        "num_classes": 7,
        "in_channels": channels,
        "image_size": size,
    }


@pytest.mark.parametrize(
    "arch,size,dim",
    [("resnet18", 32, 512), ("resnet50", 32, 2048), ("vgg16", 32, 4096), ("vit_b_16", 32, 768)],
)
def test_torchvision_architectures_split_at_penultimate_layer(arch, size, dim):
    torch.manual_seed(0)
    model = M.build_model(arch, 5, in_channels=3, image_size=size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        feats = model.features(x)
        assert feats.shape == (2, dim)
        assert model(x).shape == (2, 5)
    assert model.feature_dim == dim and model.num_classes == 5


def test_replace_head_is_one_call_and_keeps_backbone():
    torch.manual_seed(0)
    model = M.build_model("small_cnn", 5, in_channels=1, image_size=16)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    old_head = model.head
    M.replace_head(model, 3)
    assert model.head is not old_head and model.num_classes == 3
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 3)


def test_rebuild_from_config_loads_state_exactly():
    torch.manual_seed(0)
    model = M.build_model("resnet18", 4, in_channels=1, image_size=32).eval()
    clone = M.model_from_config(model.config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), clone.eval()(x))


def test_local_imagenet_weights_are_loaded(tmp_path):
    torch.manual_seed(1)
    reference = tvm.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    torch.manual_seed(2)  # a different init, so equality below can only come from the file
    model = M.build_model("resnet18", 1000, in_channels=3, image_size=32, weights=path)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.head.weight, reference.fc.weight)  # 1000 classes: ImageNet head kept
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))
    small = M.build_model("resnet18", 5, in_channels=3, image_size=32, weights=path)
    assert small.num_classes == 5 and torch.equal(
        small.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight
    )
    # Wrapped state dicts (as many training scripts save them) are accepted too.
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "w.pth"
    )
    wrapped = M.build_model("resnet18", 1000, in_channels=3, image_size=32, weights=tmp_path / "w.pth")
    assert torch.equal(wrapped.backbone.conv1.weight, reference.conv1.weight)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "resnet50-11ad3fa6.pth"
    with pytest.raises(M.WeightsError) as err:
        M.build_model("resnet50", 10, image_size=32, weights=missing)
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_wrong_architecture_weights_are_a_clear_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(tvm.resnet18().state_dict(), path)
    with pytest.raises(M.WeightsError) as err:
        M.build_model("resnet50", 10, image_size=32, weights=path)
    text = str(err.value)
    assert str(path) in text and "does not fit architecture resnet50" in text and "shape mismatches" in text


def test_weights_need_three_channels_and_a_torchvision_arch(tmp_path):
    with pytest.raises(M.WeightsError, match="--channels 3"):
        M.build_model("resnet18", 10, in_channels=1, weights=tmp_path / "x.pth")
    with pytest.raises(M.WeightsError, match="no ImageNet weights"):
        M.build_model("small_cnn", 10, weights="imagenet")
    with pytest.raises(ValueError, match="unknown architecture"):
        M.build_model("resnet19", 10)


# ----------------------------------------------------------------------------------------------
# ViT-S/16 from a timm-layout file
# ----------------------------------------------------------------------------------------------


def _timm_vit_forward(state: dict[str, torch.Tensor], x: torch.Tensor, heads: int = 6) -> torch.Tensor:
    """A pre-norm ViT written from timm's key names alone: the reference the mapped model must match."""
    ln = lambda t, p: torch.nn.functional.layer_norm(t, t.shape[-1:], state[f"{p}.weight"], state[f"{p}.bias"], 1e-6)
    lin = lambda t, p: t @ state[f"{p}.weight"].T + state[f"{p}.bias"]
    tokens = torch.nn.functional.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=16)
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([state["cls_token"].expand(len(x), -1, -1), tokens], dim=1) + state["pos_embed"]
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    for i in range(blocks):
        p = f"blocks.{i}"
        q, k, v = lin(ln(tokens, f"{p}.norm1"), f"{p}.attn.qkv").chunk(3, dim=-1)
        split = lambda t: t.reshape(*t.shape[:2], heads, -1).transpose(1, 2)
        attn = torch.softmax(split(q) @ split(k).transpose(-1, -2) / split(q).shape[-1] ** 0.5, dim=-1)
        mixed = (attn @ split(v)).transpose(1, 2).reshape(tokens.shape)
        tokens = tokens + lin(mixed, f"{p}.attn.proj")
        hidden = torch.nn.functional.gelu(lin(ln(tokens, f"{p}.norm2"), f"{p}.mlp.fc1"))
        tokens = tokens + lin(hidden, f"{p}.mlp.fc2")
    return lin(ln(tokens, "norm")[:, 0], "head")


def test_vit_s_16_loads_timm_weights_and_computes_timms_forward(tmp_path):
    from pretrain_knowledge.testing import write_random_weights

    path = write_random_weights("vit_s_16", tmp_path / "vit_s_16.pth", seed=1)
    state = torch.load(path, weights_only=True)
    assert "blocks.11.attn.qkv.weight" in state  # the file is in timm's layout
    model = M.build_model("vit_s_16", 1000, weights=path).eval()
    # ViT-S/16: 22.05 M parameters with its 1000-class head (timm and DeiT report 22 M).
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for t in state.values()) == 22_050_664
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), _timm_vit_forward(state, x), atol=1e-4)
    assert model.feature_dim == 384


def test_vit_s_16_has_no_download_and_says_to_give_a_file():
    from pretrain_knowledge.spec import ConfigError, load_experiments

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["architectures"] = {"vits": {"model": "vit_s_16", "weights": "imagenet"}}
    name = next(iter(config["datasets"]))
    config["datasets"][name].update(image_size=32, channels=3)
    config["experiments"] = [{"datasets": [name], "architectures": ["vits"], "seeds": [0]}]
    with pytest.raises(ConfigError, match="architectures.vits.weights: torchvision has no vit_s_16 weights"):
        load_experiments(config)
