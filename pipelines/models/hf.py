"""Hugging Face video classifiers as models: `hf:DIR` (a `save_pretrained` directory) or `hf:org/name`.

The model's spec — frames per clip, resize and crop, mean and std — is read from the directory's
`config.json` and `preprocessor_config.json` (or `video_preprocessor_config.json`), with no torch
or transformers import, so client commands stay instant. Loading the model itself is
`pipelines.models.hf_backend`'s job.

    >>> spec = get_hf_spec("hf:checkpoints/videomae-tiny")                # doctest: +SKIP
    >>> spec.num_frames, spec.crop_size, spec.mean
    (16, 224, (0.485, 0.456, 0.406))

Local directories are named by their absolute path (`hf:/abs/dir`), so a job names the same model
whichever directory the worker runs in. A hub id (`hf:MCG-NJU/videomae-base-finetuned-kinetics`)
needs the network the first time; its files are then in Hugging Face's cache.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from pathlib import Path

from pipelines.errors import UnknownModelError, one_line
from pipelines.models.spec import ModelSpec

PREFIX = "hf:"
# Frames between two sampled frames at 30 fps: VideoMAE's Kinetics recipe samples 16 frames every
# 4th (16x4), as the Hugging Face fine-tuning guide does. Hugging Face configs do not say.
SAMPLING_RATE = 4
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")
# What a processor does when its config leaves a value out (VideoMAEImageProcessor's defaults).
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")  # org/name


def is_hf(name: str) -> bool:
    return name.startswith(PREFIX)


def canonical_name(name: str) -> str:
    """`hf:` + the absolute directory, or `hf:` + a hub id; UnknownModelError if it is neither."""
    target = name[len(PREFIX):].strip()
    if not target:
        raise UnknownModelError("hf: needs a directory or a hub id, e.g. hf:./videomae or hf:org/name")
    path = Path(target).expanduser()
    if path.is_dir():
        return PREFIX + str(path.resolve())
    if HUB_ID.match(target) and not target.startswith((".", "~")):
        return PREFIX + target
    raise UnknownModelError(f"{name!r}: no such directory; pass hf:DIR (a directory written by save_pretrained) "
                            "or hf:org/name (a Hugging Face hub id)")


def get_hf_spec(name: str):
    return _spec(canonical_name(name))


@lru_cache(maxsize=32)
def _spec(name: str):
    source = name[len(PREFIX):]
    config = _read_json(source, "config.json", required=True)
    processor = next((p for f in PROCESSOR_FILES if (p := _read_json(source, f, required=False)) is not None), {})
    if "num_frames" not in config or "hidden_size" not in config:
        kind = config.get("model_type", "unknown")
        raise UnknownModelError(f"{name}: a {kind!r} model, not a video classifier (its config has no num_frames "
                                "or hidden_size); use a VideoMAE, TimeSformer or ViViT video classifier")
    image_size = _square(config.get("image_size", 224), name, "image_size")
    side, crop = _geometry(processor, image_size, name)
    rescale = processor.get("rescale_factor", 1 / 255) if processor.get("do_rescale", True) else 1.0
    normalize = processor.get("do_normalize", True)
    mean = tuple(processor.get("image_mean", DEFAULT_MEAN)) if normalize else (0.0, 0.0, 0.0)
    std = tuple(processor.get("image_std", DEFAULT_STD)) if normalize else (1.0, 1.0, 1.0)
    return ModelSpec(name, "", int(config["num_frames"]), SAMPLING_RATE, side, crop, int(config["hidden_size"]),
                     checkpoint_file="", fixed_input=True, backend="hf", mean=mean, std=std,
                     pixel_max=round(1 / rescale, 6), antialias=True)


def _square(size, name: str, what: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise UnknownModelError(f"{name}: {what} {size} is not square; reelflow feeds square centre crops")
        size = size[0]
    return int(size)


def _geometry(processor: dict, image_size: int, name: str) -> tuple[int, int]:
    """(short side after resizing, square crop) from the processor's size and crop_size."""
    size = processor.get("size", {"shortest_edge": image_size})
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if not processor.get("do_center_crop", True):
        crop = size.get("shortest_edge", image_size)
    else:
        crop_size = processor.get("crop_size", {"height": image_size, "width": image_size})
        crop = _square([crop_size["height"], crop_size["width"]] if isinstance(crop_size, dict) else crop_size,
                       name, "crop_size")
    if "shortest_edge" not in size:
        raise UnknownModelError(f"{name}: processor size {size} is not supported; reelflow resizes the short side "
                                "(size: {'shortest_edge': N}) then centre-crops")
    side = int(size["shortest_edge"])
    if side < crop:
        raise UnknownModelError(f"{name}: the processor resizes the short side to {side}, smaller than its "
                                f"{crop}x{crop} crop; fix size or crop_size in the preprocessor config")
    if crop != image_size:
        raise UnknownModelError(f"{name}: the processor crops {crop}x{crop} but the model takes {image_size}x"
                                f"{image_size}; fix crop_size in the preprocessor config")
    return side, crop


def _read_json(source: str, filename: str, *, required: bool) -> dict | None:
    path = Path(source)
    if path.is_absolute():
        path = path / filename
        if not path.is_file():
            if required:
                raise UnknownModelError(f"hf:{source} has no {filename}; save the model there with "
                                        "model.save_pretrained(DIR) (and its processor with processor.save_pretrained)")
            return None
    else:
        path = _hub_file(source, filename, required)
        if path is None:
            return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UnknownModelError(f"hf:{source}: cannot read {filename} ({e}); is it a Hugging Face model?") from None
    if not isinstance(data, dict):
        raise UnknownModelError(f"hf:{source}: {filename} is not a JSON object; is it a Hugging Face model?")
    return data


def _hub_file(repo_id: str, filename: str, required: bool) -> str | None:
    """A file of a hub model: from Hugging Face's cache, else downloaded (needs huggingface_hub)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError
    except ImportError:
        raise UnknownModelError(f"hf:{repo_id}: hub models need the hf extra; pip install 'reelflow[hf]'") from None
    try:
        return hf_hub_download(repo_id, filename, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retries warn line by line; the error below says it once
    try:
        return hf_hub_download(repo_id, filename)
    except RemoteEntryNotFoundError:
        if required:
            raise UnknownModelError(f"hf:{repo_id} has no {filename}; is it a Hugging Face video classifier?") from None
        return None
    except Exception as e:  # offline (HF_HUB_OFFLINE), unknown or gated repo...
        raise UnknownModelError(f"cannot fetch hf:{repo_id} from the Hugging Face hub ({one_line(e, limit=160)}); check the id and "
                                "the network, or save the model with save_pretrained and pass hf:DIR") from None
    finally:
        hub_log.setLevel(level)
