"""Build a hub model and load its weights: `kinetics`, a local checkpoint path, or `none`.

    >>> model, weights_id = build_model(get_spec("x3d_xs"), "none")     # doctest: +SKIP
    >>> weights_id
    'none (random init, seed 0)'

- `kinetics`: the official checkpoint, downloaded once into torch.hub's cache
  (`$TORCH_HOME/hub/checkpoints`, by default `~/.cache/torch/hub/checkpoints`); set
  `REELFLOW_MODEL_ZOO_URL` to fetch from a mirror instead.
- a path: a PyTorchVideo checkpoint (`{"model_state": state_dict}`) or a plain state dict; a
  checkpoint from `reelflow train` also names its classes (`"classes"`) and model (`"model"`), and
  the model is built with that many outputs.
- `pretrained` (or the default `kinetics`) for an `hf:` model: the weights saved with it (a local
  `save_pretrained` directory, or the hub's files).
- `none`: deterministic random init (seed 0, the same weights in every process). Results made with
  it say so.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipelines.errors import WeightsError, one_line
from pipelines.models.table import RANDOM_SEED, RANDOM_WEIGHTS_ID, ModelSpec, get_spec  # noqa: F401
from pipelines.models.weight_files import (PRETRAINED, check_weights, checkpoint_cache_path, file_sha256,  # noqa: F401  (re-exported)
                                    checkpoint_url, ensure_cached)



@dataclass
class LoadedModel:
    """A built model, the id of its weights, and its class names when the checkpoint names them."""

    model: nn.Module
    weights_id: str
    classes: list[str] | None = None


def build_model(spec: ModelSpec, weights: str = "kinetics", *, progress: bool = True) -> tuple[nn.Module, str]:
    """The model in eval mode on the CPU, and an id saying which weights it carries."""
    loaded = load_model(spec, weights, progress=progress)
    return loaded.model, loaded.weights_id


def load_model(spec: ModelSpec, weights: str = "kinetics", *, progress: bool = True) -> LoadedModel:
    """Like build_model, and the checkpoint's class names (None: the Kinetics-400 head)."""
    if weights == "none":
        model = _random_model(spec)
        return LoadedModel(model, RANDOM_WEIGHTS_ID, _own_classes(spec, model))
    classes = None
    if spec.backend == "hf" and weights in PRETRAINED:
        from pipelines.models import hf_backend  # transformers loads only for hf: models

        check_weights(spec, weights)
        model = hf_backend.build(spec, pretrained=True)
        return LoadedModel(model, hf_backend.pretrained_id(spec), hf_backend.classes_of(model))
    if weights == "kinetics":
        model = _architecture(spec)
        state = _kinetics_state(spec, progress)
        weights_id = f"kinetics ({spec.checkpoint_file})"
    else:
        path = Path(weights).expanduser()
        checkpoint = _local_checkpoint(path)
        classes = checkpoint_classes(checkpoint, path, spec)
        model = _architecture(spec)
        if classes is not None:
            replace_head(model, len(classes))
        state = _unwrap(checkpoint, path)
        weights_id = f"{Path(weights).name} (sha256 {file_sha256(path)[:12]})"
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise WeightsError(
            f"checkpoint {weights!r} does not fit {spec.name}: {' '.join(first[1:2] or first)[:300]}; "
            f"use a checkpoint saved from {spec.name}"
        ) from None
    return LoadedModel(model.eval(), weights_id, classes)


def _own_classes(spec: ModelSpec, model: nn.Module) -> list[str] | None:
    """The class names a model's own config gives (Hugging Face's id2label); None for the hub models."""
    if spec.backend != "hf":
        return None
    from pipelines.models import hf_backend  # transformers loads only for hf: models

    return hf_backend.classes_of(model)


def head_module(model: nn.Module) -> nn.Module:
    """The head: `model.head` (MViT, Hugging Face models) or `model.blocks[-1]` (ResNet family, X3D)."""
    return model.head if hasattr(model, "head") else model.blocks[-1]


def projection_layer(model: nn.Module) -> nn.Linear:
    """The head's final Linear (`proj`)."""
    return head_module(model).proj


def replace_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Swap the final projection for a fresh Linear with `num_classes` outputs (same input size)."""
    head = head_module(model)
    head.proj = nn.Linear(head.proj.in_features, num_classes)
    return head.proj


def checkpoint_classes(checkpoint, path: Path, spec: ModelSpec) -> list[str] | None:
    """The class names a `reelflow train` checkpoint carries, after checking it fits `spec`."""
    if not isinstance(checkpoint, dict) or "classes" not in checkpoint:
        return None
    classes = checkpoint["classes"]
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise WeightsError(f"checkpoint {str(path)!r} has a malformed 'classes' entry; expected a list of names")
    trained_for = checkpoint.get("model")
    if isinstance(trained_for, str) and trained_for != spec.name:
        raise WeightsError(f"checkpoint {str(path)!r} was trained for {trained_for}, not {spec.name}; "
                           f"pass --model {trained_for}")
    return list(classes)


def _architecture(spec: ModelSpec) -> nn.Module:
    if spec.backend == "hf":
        from pipelines.models import hf_backend  # transformers loads only for hf: models

        return hf_backend.build(spec, pretrained=False)
    with warnings.catch_warnings():  # pytorchvideo's use of torch.jit.script warns on import
        warnings.simplefilter("ignore", FutureWarning)
        from pytorchvideo.models import hub

    return getattr(hub, spec.hub_builder)(pretrained=False)


def _random_model(spec: ModelSpec) -> nn.Module:
    # Parameters are drawn from torch's global generator: fork it so callers' RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return _architecture(spec).eval()










def _kinetics_state(spec: ModelSpec, progress: bool) -> dict:
    path = ensure_cached(spec, progress)
    # The official files are trusted; they may hold non-tensor metadata beside the weights.
    return _unwrap(_load(path, trusted=True), path)


def _local_checkpoint(path: Path):
    if not path.is_file():
        raise WeightsError(
            f"weights {str(path)!r} is not a file; pass 'kinetics', 'none' or a checkpoint path"
        )
    return _load(path, trusted=False)


def _load(path: Path, *, trusted: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):
            raise WeightsError(f"cannot read checkpoint {str(path)!r} (not a torch file); is it a checkpoint?") from None
        if trusted:
            return torch.load(path, map_location="cpu", weights_only=False)
        raise WeightsError(
            f"checkpoint {str(path)!r} holds Python objects besides tensors; re-save it with "
            "torch.save({'model_state': model.state_dict()}, path)"
        ) from None
    except Exception as e:  # truncated or foreign files raise many different errors
        # (some say little: a text file is KeyError(101), its first byte)
        reason = "not a torch file" if isinstance(e, (KeyError, IndexError, EOFError)) or len(str(e)) < 8 else one_line(e)
        raise WeightsError(f"cannot read checkpoint {str(path)!r} ({reason}); is it a torch checkpoint?") from None


def _unwrap(checkpoint, path: Path) -> dict:
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_state"), dict):
        checkpoint = checkpoint["model_state"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise WeightsError(
            f"checkpoint {str(path)!r} is neither {{'model_state': state_dict}} nor a state dict; "
            "save model.state_dict()"
        )
    return checkpoint
