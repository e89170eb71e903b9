"""A tiny VideoMAE video classifier, built from a config and saved the Hugging Face way.

    >>> directory = save_tiny_videomae(tmp_path / "videomae")   # config.json, model.safetensors, preprocessor_config.json
"""

from __future__ import annotations

from pathlib import Path

# Its own classes, in id order: what `--model hf:DIR` must answer with.
CLASSES = ["forklift too fast", "person fell", "door left open"]
MEAN = (0.485, 0.456, 0.406)  # ImageNet's, as the released VideoMAE processors use
STD = (0.229, 0.224, 0.225)


def save_tiny_videomae(directory: Path, *, frames: int = 4, image: int = 32, short_side: int = 36, seed: int = 7) -> Path:
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification, VideoMAEImageProcessor

    config = VideoMAEConfig(
        image_size=image, patch_size=16, num_frames=frames, tubelet_size=2, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoMAEForVideoClassification(config)
    model.save_pretrained(directory)
    processor = VideoMAEImageProcessor(size={"shortest_edge": short_side}, crop_size={"height": image, "width": image},
                                       image_mean=list(MEAN), image_std=list(STD))
    processor.save_pretrained(directory)
    return Path(directory)
