"""Model registry: every architecture is a :class:`Classifier` = ``backbone`` + linear ``head``.

Splitting each network at its penultimate layer is what the three-model comparison needs: the
linear probe reads ``features(x)`` of a frozen backbone, fine-tuning swaps ``head`` for one over the
downstream classes (:func:`replace_head`), and both keep the same state-dict keys
(``backbone.*``, ``head.*``) so checkpoints of all modes load the same way.

Architectures: ``small_cnn`` (ours, for 28×28 grayscale on a laptop; any size ≥ 8 and any
channel count), and torchvision's ``resnet18``, ``resnet50``, ``vgg16`` (inputs ≥ 32 px) and
``vit_b_16`` (input side a multiple of 16), and ``vit_s_16``, ViT-S/16 built from torchvision's
``VisionTransformer`` (torchvision ships no ViT-S). ImageNet weights come from a local file (a
torchvision state dict of the same architecture; for ``vit_s_16`` also timm's layout, whose keys
are mapped) or, when online, torchvision's weights API.

Text architectures (``bert_base``, ``distilbert``, ``tiny_bert``) live in
:mod:`pretrain_knowledge.models_text` with the same interface (``backbone``, ``head``,
``features``, ``config``); :func:`build_model` and :func:`model_from_config` dispatch on the
architecture's modality.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import models_text
from .catalog import ARCHITECTURES, ArchitectureInfo


class WeightsError(FileNotFoundError):
    """Pretrained weights are missing, unreadable or belong to another architecture."""


class Classifier(nn.Module):
    """``head(backbone(x))``; ``config`` rebuilds the same module (see :func:`build_model`)."""

    def __init__(self, arch: str, backbone: nn.Module, head: nn.Linear, *, in_channels: int, image_size: int):
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.head = head
        self.in_channels = in_channels
        self.image_size = image_size

    @property
    def feature_dim(self) -> int:
        return int(self.head.in_features)

    @property
    def num_classes(self) -> int:
        return int(self.head.out_features)

    @property
    def config(self) -> dict[str, Any]:
        """Plain-dict description stored in checkpoints."""
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
        }

    def features(self, x: Tensor) -> Tensor:
        """Penultimate representation (B, feature_dim): what the linear probe reads."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


# --------------------------------------------------------------------------------------------
# small_cnn
# --------------------------------------------------------------------------------------------


class SmallCNNBackbone(nn.Sequential):
    """Four conv-BN-ReLU stages (16, 32, 64, 128 channels), 2× max-pooling between them, and
    global average pooling to a 128-d feature vector.

    Why this shape: global average pooling, as in ResNets, makes the features position-free,
    which from scratch must be learned slowly from few images but transfers from pre-training;
    a flattened last map (or a dense projection on it) learns Fashion-MNIST classes 5–9 from 500
    images as fast as fine-tuning does, which would leave nothing to explain. One conv per
    stage keeps an epoch over the 30 000 upstream images at seconds on 2 CPU cores. Measured
    alternatives are in config/defaults-training.yaml.
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128)):
        layers: list[nn.Module] = []
        cin = in_channels
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            layers += [
                nn.Conv2d(cin, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            cin = width
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = cin


def _build_small_cnn(in_channels: int, image_size: int) -> tuple[nn.Module, nn.Linear]:
    if image_size < 8:
        raise ValueError(f"small_cnn needs images of at least 8 px; got {image_size}")
    backbone = SmallCNNBackbone(in_channels)
    return backbone, nn.Linear(backbone.out_dim, 10)


# --------------------------------------------------------------------------------------------
# torchvision architectures
# --------------------------------------------------------------------------------------------


def _tv_model(name: str, image_size: int) -> nn.Module:
    import torchvision.models as tvm

    if name.startswith("vit"):
        if image_size % 16:
            raise ValueError(f"{name} needs an image size divisible by 16; got {image_size}")
        if name == "vit_s_16":
            # DeiT-S / timm vit_small_patch16_224: 12 layers, 6 heads of 64, MLP ratio 4.
            return tvm.VisionTransformer(image_size, 16, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536)
        return tvm.vit_b_16(image_size=image_size)
    if name == "vgg16" and image_size < 32:
        raise ValueError(f"vgg16 needs images of at least 32 px (five 2× poolings); got {image_size}")
    return getattr(tvm, name)()


def _split_tv(name: str, model: nn.Module, in_channels: int) -> tuple[nn.Module, nn.Linear]:
    """Cut a torchvision classifier at its last Linear layer; swap the stem for other channel counts."""
    if name.startswith("resnet"):
        head = model.fc
        model.fc = nn.Identity()
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    elif name == "vgg16":
        head = model.classifier[-1]
        model.classifier[-1] = nn.Identity()
        if in_channels != 3:
            model.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    elif name.startswith("vit"):
        head = model.heads.head
        model.heads = nn.Identity()
        if in_channels != 3:
            model.conv_proj = nn.Conv2d(in_channels, model.hidden_dim, model.patch_size, model.patch_size)
    else:  # pragma: no cover - registry and this function are edited together
        raise ValueError(name)
    return model, head


def available_models() -> list[str]:
    """Every registered architecture, by the name a config uses (catalog.ARCHITECTURES)."""
    return sorted(ARCHITECTURES)


def _spec(arch: str) -> ArchitectureInfo:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {available_models()}")
    return ARCHITECTURES[arch]


def build_model(
    arch: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    image_size: int | None = None,
    weights: str | os.PathLike[str] | None = None,
) -> Classifier:
    """A fresh :class:`Classifier`, optionally starting from ImageNet weights.

    ``weights``: None (random init from the global torch RNG), a path to a torchvision state
    dict of ``arch``, or ``"imagenet"`` for torchvision's weights API (needs the network once).
    With weights, the ImageNet head is kept when ``num_classes`` is 1000 and replaced otherwise.
    """
    spec = _spec(arch)
    if spec.modality == "text":
        return models_text.build_text_model(arch, num_classes, weights=weights)  # type: ignore[return-value]
    size = int(image_size or spec.default_image_size)
    if arch == "small_cnn":
        if weights is not None:
            raise WeightsError(f"{arch} has no ImageNet weights; drop the weights option (got {weights!r})")
        backbone, head = _build_small_cnn(in_channels, size)
        model = Classifier(arch, backbone, head, in_channels=in_channels, image_size=size)
        return replace_head(model, num_classes)
    if weights is not None and in_channels != 3:
        raise WeightsError(
            f"ImageNet weights for {arch} expect 3-channel input; prepare the data with --channels 3 "
            f"(data.channels: 3), got in_channels={in_channels}"
        )
    tv = _tv_model(arch, size)
    if weights is not None:
        load_imagenet_weights(tv, arch, weights, image_size=size)
    backbone, head = _split_tv(arch, tv, in_channels)
    model = Classifier(arch, backbone, head, in_channels=in_channels, image_size=size)
    return (
        model
        if head.out_features == num_classes and weights is not None
        else replace_head(model, num_classes)
    )


def replace_head(model: Classifier, num_classes: int) -> Classifier:
    """Give ``model`` a new, randomly initialised linear head over ``num_classes`` (in place).

    The initialisation draws from the global torch RNG, so seed before calling for reproducibility.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    ref = next(model.backbone.parameters(), None)
    head = nn.Linear(model.feature_dim, num_classes)
    if ref is not None:
        head = head.to(device=ref.device, dtype=ref.dtype)
    model.head = head
    return model


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist; download the torchvision ImageNet weights for this "
            "architecture (e.g. resnet50-11ad3fa6.pth from download.pytorch.org/models/) and set "
            "the weights path in the config, or use weights: imagenet when online"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"weights file {path} is not a readable torch state dict ({err})") from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _download_state_dict(arch: str) -> dict[str, Tensor]:
    import torchvision.models as tvm

    w = tvm.get_model_weights(arch)[_spec(arch).imagenet]
    try:
        return w.get_state_dict(progress=True)
    except Exception as err:  # noqa: BLE001 - urllib raises many types offline
        raise WeightsError(
            f"could not fetch ImageNet weights for {arch} through torchvision ({err}). Offline? Download "
            f"{w.url} on a machine with internet and give its path as the weights file."
        ) from err


def load_imagenet_weights(
    tv_model: nn.Module, arch: str, weights: str | os.PathLike[str], *, image_size: int = 224
) -> None:
    """Load a torchvision state dict into an unsplit torchvision model, with clear errors."""
    if str(weights) == "imagenet":
        state, origin = _download_state_dict(arch), f"torchvision's {arch} ImageNet weights"
    else:
        path = Path(weights)
        state, origin = _read_state_dict(path), f"weights file {path}"
    if arch == "vit_s_16" and "cls_token" in state:
        state = timm_vit_to_torchvision(state)
    if arch.startswith("vit") and "encoder.pos_embedding" in state and image_size != 224:
        from torchvision.models.vision_transformer import interpolate_embeddings

        state = interpolate_embeddings(image_size, 16, state)  # type: ignore[arg-type]
    target = tv_model.state_dict()
    # Files saved before PyTorch 0.4.1 lack BatchNorm's batch counter; it only matters with
    # momentum=None, so it starts at 0 as load_state_dict itself would set it.
    for key in set(target) - set(state):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(target[key])
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [k for k in set(target) & set(state) if target[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise WeightsError(
            f"{origin} does not fit architecture {arch}: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(shapes)} shape mismatches "
            f"{sorted(shapes)[:3]}. Is it a torchvision {arch} state dict?"
        )
    tv_model.load_state_dict(state)


_TIMM_BLOCK = {  # timm ViT block keys -> torchvision EncoderBlock keys
    "norm1": "ln_1",
    "attn.qkv": "self_attention.in_proj",
    "attn.proj": "self_attention.out_proj",
    "norm2": "ln_2",
    "mlp.fc1": "mlp.0",
    "mlp.fc2": "mlp.3",
}
_TIMM_TOP = {
    "cls_token": "class_token",
    "pos_embed": "encoder.pos_embedding",
    "patch_embed.proj.weight": "conv_proj.weight",
    "patch_embed.proj.bias": "conv_proj.bias",
    "norm.weight": "encoder.ln.weight",
    "norm.bias": "encoder.ln.bias",
    "head.weight": "heads.head.weight",
    "head.bias": "heads.head.bias",
}


def timm_vit_to_torchvision(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A timm ViT state dict (``vit_small_patch16_224`` and kin) under torchvision's key names.

    The tensors need no reshaping: timm's fused ``qkv`` projection stacks q, k and v in the same
    order as ``nn.MultiheadAttention.in_proj``, and both use LayerNorm with eps 1e-6. Keys that
    have no torchvision counterpart (e.g. ``fc_norm`` of a mean-pooled variant) stay as they are,
    so loading reports them as unexpected instead of silently dropping them.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in _TIMM_TOP:
            out[_TIMM_TOP[key]] = value
            continue
        parts = key.split(".")
        if parts[0] == "blocks" and len(parts) >= 4:
            inner, leaf = ".".join(parts[2:-1]), parts[-1]
            if inner in _TIMM_BLOCK:
                name = _TIMM_BLOCK[inner]
                if name == "self_attention.in_proj":  # MultiheadAttention's fused parameters
                    out[f"encoder.layers.encoder_layer_{parts[1]}.{name}_{leaf}"] = value
                else:
                    out[f"encoder.layers.encoder_layer_{parts[1]}.{name}.{leaf}"] = value
                continue
        out[key] = value
    return out


def model_from_config(config: dict[str, Any]) -> Classifier:
    """Rebuild the (untrained) module a checkpoint's ``config['model']`` describes."""
    if _spec(config["arch"]).modality == "text":
        return models_text.text_model_from_config(config)  # type: ignore[return-value]
    return build_model(
        config["arch"],
        int(config["num_classes"]),
        in_channels=int(config["in_channels"]),
        image_size=int(config["image_size"]),
    )
