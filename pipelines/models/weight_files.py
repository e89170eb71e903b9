"""Where a model's weights come from, checked without torch: the official checkpoint's cache path
and URL, its download, and `check_weights` — the common failures in a second, before any process
builds a model (`reelflow up` checks each model it deploys this way without importing torch).

    >>> check_weights(get_spec("x3d_xs"), "none")
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
from pathlib import Path

from pipelines.errors import WeightsError
from pipelines.models.spec import ModelSpec
from pipelines.models.table import get_spec  # noqa: F401  (get_spec: for the doctest)

# For a Hugging Face model (`hf:`), the weights saved with it; `kinetics`, the default, means the same.
PRETRAINED = ("pretrained", "kinetics")
HF_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")


def hub_dir() -> Path:
    """torch.hub's directory: torch's own answer once torch is loaded (it may have been moved with
    torch.hub.set_dir), else the rule torch.hub.get_dir follows ($TORCH_HOME/hub)."""
    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(torch_home)) / "hub"


def checkpoint_cache_path(spec: ModelSpec) -> Path:
    return hub_dir() / "checkpoints" / spec.checkpoint_file


def checkpoint_url(spec: ModelSpec) -> str:
    root = os.environ.get("REELFLOW_MODEL_ZOO_URL")
    return f"{root.rstrip('/')}/{spec.checkpoint_file}" if root else spec.checkpoint_url


def check_weights(spec: ModelSpec, weights: str) -> None:
    """Fail fast, without building the model, when weights cannot be had: a path that is not a
    file, an hf: directory with no weights, or `kinetics` with nothing cached and no way to
    download (which this then does)."""
    if spec.backend == "hf" and weights in PRETRAINED:
        path = Path(spec.name.removeprefix("hf:"))
        if path.is_absolute() and not any((path / name).is_file() for name in HF_WEIGHT_FILES):
            raise WeightsError(f"{spec.name} has no weights ({' or '.join(HF_WEIGHT_FILES[::2])}); save them "
                               "with model.save_pretrained(DIR), or pass --weights none or a checkpoint path")
    elif weights == "kinetics":
        ensure_cached(spec, progress=False)
    elif weights != "none" and not Path(weights).expanduser().is_file():
        raise WeightsError(f"weights {weights!r} is not a file; pass 'kinetics', 'none' or a checkpoint path")


def ensure_cached(spec: ModelSpec, progress: bool = True) -> Path:
    """The official checkpoint in torch.hub's cache, downloaded on first use."""
    path = checkpoint_cache_path(spec)
    url = checkpoint_url(spec)
    if not path.exists():
        import torch.hub  # only to download: its temporary file, renamed when complete, and progress bar

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), progress=progress)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise WeightsError(
                f"cannot download the {spec.name} checkpoint {url} ({reason}); "
                f"download it by hand to {path}, or pass --weights PATH or --weights none"
            ) from None
    return path


def file_sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
