"""Hugging Face video classifiers shaped like PyTorchVideo's models, so every path serves them.

`HFVideoClassifier` takes the classifier Linear out of a `*ForVideoClassification` model (VideoMAE,
TimeSformer, ViViT...) and keeps it as `head.proj`: the Hugging Face model then outputs its pooled
representation (VideoMAE: the mean of the tokens after `fc_norm`; TimeSformer: the CLS token), which
is the embedding, and `head.proj` turns it into logits — the same shape as a PyTorchVideo model, so
embeddings, `replace_head`, the linear probe and fine-tuning need nothing of their own. Input is
(B, C, T, H, W) as everywhere in reelflow; Hugging Face models take (B, T, C, H, W).

    >>> model = build(get_spec("hf:/models/videomae"), pretrained=True)      # doctest: +SKIP
    >>> classes_of(model)                                                    # its id2label, in order
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipelines.errors import WeightsError, one_line
from pipelines.models.spec import ModelSpec
from pipelines.models.weight_files import HF_WEIGHT_FILES as WEIGHT_FILES, file_sha256


class _Head(nn.Module):
    """`proj` (the classifier Linear), as PyTorchVideo heads name it; no activation."""

    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj
        self.activation = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class HFVideoClassifier(nn.Module):
    def __init__(self, hf_model: nn.Module):
        super().__init__()
        if not isinstance(getattr(hf_model, "classifier", None), nn.Linear):
            raise WeightsError(f"{type(hf_model).__name__} has no Linear `classifier`; use a *ForVideoClassification "
                               "model such as VideoMAEForVideoClassification")
        self.head = _Head(hf_model.classifier)
        hf_model.classifier = nn.Identity()  # its "logits" are now the pooled representation
        self.hf = hf_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.hf(pixel_values=x.transpose(1, 2)).logits
        return self.head(pooled)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise WeightsError("hf: models need transformers; pip install 'reelflow[hf]'") from None
    transformers.logging.set_verbosity_error()  # its load reports and progress bars are not ours to print
    transformers.logging.disable_progress_bar()
    return transformers


def _source(spec: ModelSpec) -> str:
    return spec.name.removeprefix("hf:")


def build(spec: ModelSpec, pretrained: bool) -> HFVideoClassifier:
    """The model from its config (random init, from torch's global generator) or with its own weights."""
    transformers = _transformers()
    auto = transformers.AutoModelForVideoClassification
    try:
        if pretrained:
            model = auto.from_pretrained(_source(spec))
        else:
            model = auto.from_config(transformers.AutoConfig.from_pretrained(_source(spec)))
    except (OSError, ValueError, KeyError) as e:
        raise WeightsError(f"cannot load {spec.name} ({one_line(e, limit=200)}); is it a Hugging Face video classifier "
                           "saved with save_pretrained?") from None
    return HFVideoClassifier(model.eval())


def classes_of(model: HFVideoClassifier) -> list[str]:
    """Class names by index, from the config's id2label."""
    id2label = model.hf.config.id2label
    return [str(id2label.get(i, f"class_{i}")) for i in range(model.head.proj.out_features)]


def pretrained_id(spec: ModelSpec) -> str:
    """`pretrained (<dir or id>, sha256 …)` for local weights; the hub id's name otherwise."""
    source = _source(spec)
    path = Path(source)
    if path.is_absolute():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                digest = file_sha256(path / name)[:12]  # in blocks: a VideoMAE base is 350 MB
                return f"pretrained ({path.name}/{name}, sha256 {digest})"
    return f"pretrained ({source})"
