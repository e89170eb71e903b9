"""Train a model on a folder of labelled videos: a linear probe or full fine-tuning.

    >>> result = train("dataset", TrainConfig(model="x3d_xs", weights="none", linear_probe=True),
    ...                output="ckpt.pyth")                                # doctest: +SKIP
    >>> result.val_accuracy, result.best_epoch                           # (1.0, 37)

- Linear probe: the backbone is frozen; each video's segment embeddings are computed once (the
  inference transform, the forward pass of `ClipModel.predict`) and kept in memory; only a new
  linear head is trained (AdamW on standardized embeddings, the standardization folded into the head).
- Fine-tuning: clips at random positions with augmentation (`pipelines.datasets`), AdamW, linear
  warm-up then cosine decay, mixed precision on a GPU.

Either way every epoch is validated on val/ (video level: mean of the segments' probabilities) and
the best epoch is kept. The checkpoint, loadable with `torch.load(weights_only=True)`:
`{"model_state": state_dict, "classes": [...], "model": name, "reelflow": {...}}`.
"""

from __future__ import annotations

import copy
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from pipelines.datasets import VideoFolder, augment_clip, random_clip
from pipelines.errors import InputError
from pipelines.evaluation import segment_outputs
from pipelines.inference import ClipModel
from pipelines.models import DEFAULT_MODEL, ModelSpec, get_spec
from pipelines.models.weights import head_module, load_model, projection_layer, replace_head
from pipelines.progress import Bar
from pipelines.transforms import pack_pathways

CHECKPOINT_VERSION = 1
PROBE_EPOCHS = 100  # epochs over the cached embeddings: a few hundred steps, seconds on a CPU
FINE_TUNE_EPOCHS = 5
PROBE_BATCH = 32
WARMUP_FRACTION = 0.1


@dataclass
class TrainConfig:
    model: str = DEFAULT_MODEL
    weights: str = "kinetics"
    epochs: int | None = None  # default: PROBE_EPOCHS or FINE_TUNE_EPOCHS
    linear_probe: bool = False
    lr: float | None = None  # default: 1e-2 (probe), 1e-4 (fine-tuning pretrained weights), 1e-3 (from none)
    batch_size: int = 4  # fine-tuning clips per step
    weight_decay: float | None = None  # default: 1e-4 (probe), 0.05 (fine-tuning)
    max_steps: int | None = None  # fine-tuning: stop after this many steps (smoke runs)
    seed: int = 0
    device: str = "cpu"


@dataclass
class TrainResult:
    output: Path
    classes: list[str]
    best_epoch: int
    val_accuracy: float
    history: list[dict] = field(default_factory=list)  # per epoch: loss, train_accuracy, val_accuracy
    step_losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train(dataset_dir, config: TrainConfig, output, *, quiet: bool = False) -> TrainResult:
    """Train on DATASET_DIR/train, keep the best epoch on DATASET_DIR/val, write `output`."""
    started = time.perf_counter()
    spec = get_spec(config.model)
    data = VideoFolder.open(dataset_dir)
    output = Path(output)
    if output.is_dir():
        raise InputError(f"output {str(output)!r} is a directory; pass a file name such as ckpt.pyth")
    torch.manual_seed(config.seed)
    run = _probe if config.linear_probe else _fine_tune
    model, result = run(spec, data, config, Progress(quiet))
    result.output = output
    result.seconds = time.perf_counter() - started
    save_checkpoint(output, model, data.classes, spec, config, result)
    return result


def save_checkpoint(path: Path, model: nn.Module, classes: list[str], spec: ModelSpec, config: TrainConfig,
                    result: TrainResult) -> Path:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = {"version": CHECKPOINT_VERSION, "spec": asdict(spec), "trained_from": config.weights,
            "linear_probe": config.linear_probe, "best_epoch": result.best_epoch,
            "val_accuracy": result.val_accuracy, "train_seconds": round(result.seconds, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model_state": state, "classes": list(classes), "model": spec.name, "reelflow": meta}, tmp)
    tmp.replace(path)  # never a half-written checkpoint under the real name
    return path


# -- linear probe --------------------------------------------------------------------------------

def _probe(spec: ModelSpec, data: VideoFolder, config: TrainConfig, progress: Progress):
    clip_model = ClipModel.load(spec.name, config.weights, config.device)
    train_videos, val_videos = data.split("train"), data.split("val")
    features, labels = [], []
    bar = progress.bar(len(train_videos) + len(val_videos), "embeddings")
    for video in train_videos:  # overlapping segments: more examples from the same videos
        _, f = segment_outputs(clip_model, video.path, stride_s=spec.clip_seconds / 2)
        features.append(f)
        labels += [video.label] * len(f)
        bar.update()
    val = []
    for video in val_videos:
        val.append((segment_outputs(clip_model, video.path)[1], video.label))
        bar.update()
    bar.close()
    x, y = torch.cat(features), torch.tensor(labels)
    mean, std = x.mean(0), x.std(0).clamp(min=1e-6)
    x = (x - mean) / std
    val = [((f - mean) / std, label) for f, label in val]

    num_classes = len(data.classes)
    head = nn.Linear(x.shape[1], num_classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr or 1e-2, weight_decay=config.weight_decay or 1e-4)
    epochs = config.epochs or PROBE_EPOCHS
    rng = torch.Generator().manual_seed(config.seed)
    result = TrainResult(Path(), data.classes, 0, -1.0)
    best_key, best_state = None, None
    bar = progress.bar(epochs, "linear probe")
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(x), generator=rng)
        total_loss = correct = 0.0
        for i in range(0, len(x), PROBE_BATCH):
            idx = order[i:i + PROBE_BATCH]
            logits = head(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            result.step_losses.append(loss.item())
            total_loss += loss.item() * len(idx)
            correct += float((logits.argmax(1) == y[idx]).sum())
        with torch.no_grad():
            val_acc, val_loss = _video_accuracy([(head(f).softmax(1), label) for f, label in val])
        row = {"epoch": epoch, "loss": total_loss / len(x), "train_accuracy": correct / len(x),
               "val_accuracy": val_acc, "val_loss": val_loss}
        result.history.append(row)
        key = (val_acc, -val_loss)
        if best_key is None or key > best_key:
            best_key, best_state = key, copy.deepcopy(head.state_dict())
            result.best_epoch, result.val_accuracy = epoch, val_acc
        bar.update(loss=row["loss"], acc=row["train_accuracy"], val=val_acc)
    bar.close()
    head.load_state_dict(best_state)
    model = clip_model.model.cpu()
    proj = replace_head(model, num_classes)
    with torch.no_grad():  # fold the standardization into the head: W (x - m) / s + b
        proj.weight.copy_(head.weight / std)
        proj.bias.copy_(head.bias - (head.weight * (mean / std)).sum(1))
    assert projection_layer(model) is proj
    progress.line(f"linear probe: best epoch {result.best_epoch}/{epochs}, val accuracy {result.val_accuracy:.3f}")
    return model, result


def _video_accuracy(outputs: list[tuple[torch.Tensor, int]]) -> tuple[float, float]:
    """(accuracy, mean NLL) of videos whose prediction is the mean of their segments' probabilities."""
    if not outputs:
        return 0.0, 0.0
    correct, nll = 0, 0.0
    for probs, label in outputs:
        video = probs.mean(0)
        correct += int(video.argmax()) == label
        nll -= math.log(max(float(video[label]), 1e-12))
    return correct / len(outputs), nll / len(outputs)


# -- full fine-tuning ----------------------------------------------------------------------------

class FineTuner:
    """The model with a new head, its optimizer and warm-up + cosine schedule; `step` trains on a batch.

        >>> tuner = FineTuner(spec, "none", num_classes=3, total_steps=10)   # doctest: +SKIP
        >>> tuner.step(clips, labels)                                        # (loss, correct)
    """

    def __init__(self, spec: ModelSpec, weights: str, num_classes: int, total_steps: int, *, lr: float | None = None,
                 weight_decay: float | None = None, device: str = "cpu"):
        self.spec = spec
        self.device = torch.device(device)
        self.model = load_model(spec, weights).model
        replace_head(self.model, num_classes)
        self._head = head_module(self.model)
        self._activation = getattr(self._head, "activation", None)  # X3D's Softmax: train on logits
        self.model.to(self.device)
        lr = lr or (1e-3 if weights == "none" else 1e-4)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay or 0.05)
        warmup = max(1, int(total_steps * WARMUP_FRACTION))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:

        self._head.activation = None
        try:
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                return self.model(pack_pathways(batch.to(self.device), self.spec)).float()
        finally:
            self._head.activation = self._activation

    def step(self, batch: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        self.model.train()
        logits = self.logits(batch)
        loss = nn.functional.cross_entropy(logits, labels.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return loss.item(), int((logits.detach().argmax(1).cpu() == labels).sum())

    def predict(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities, no embedding) of a batch in eval mode: what `segment_outputs` asks of a model."""
        self.model.eval()
        with torch.no_grad():
            return self.logits(batch).softmax(1).cpu(), torch.empty(len(batch), 0)

    def video_probs(self, path: str) -> torch.Tensor:
        """(S, C) probabilities of the video's segments, inference transform, eval mode."""

        return segment_outputs(self, path)[0]


def _fine_tune(spec: ModelSpec, data: VideoFolder, config: TrainConfig, progress: Progress):
    train_videos, val_videos = data.split("train"), data.split("val")
    epochs = config.epochs or FINE_TUNE_EPOCHS
    steps_per_epoch = math.ceil(len(train_videos) / config.batch_size)
    total = epochs * steps_per_epoch if config.max_steps is None else min(config.max_steps, epochs * steps_per_epoch)
    tuner = FineTuner(spec, config.weights, len(data.classes), total, lr=config.lr,
                      weight_decay=config.weight_decay, device=config.device)
    rng = random.Random(config.seed)
    result = TrainResult(Path(), data.classes, 0, -1.0)
    best_key, best_state, steps = None, None, 0
    for epoch in range(1, epochs + 1):
        order = list(train_videos)
        rng.shuffle(order)
        bar = progress.bar(steps_per_epoch, f"epoch {epoch}/{epochs}")
        seen = total_loss = correct = 0
        for i in range(0, len(order), config.batch_size):
            if steps >= total:
                break
            chunk = order[i:i + config.batch_size]
            batch = torch.stack([augment_clip(random_clip(v.path, spec, rng), spec, rng) for v in chunk])
            loss, right = tuner.step(batch, torch.tensor([v.label for v in chunk]))
            steps += 1
            result.step_losses.append(loss)
            seen += len(chunk)
            total_loss += loss * len(chunk)
            correct += right
            bar.update(loss=total_loss / seen, acc=correct / seen)
        bar.close()
        val_acc, val_loss = _video_accuracy([(tuner.video_probs(v.path), v.label) for v in val_videos])
        row = {"epoch": epoch, "loss": total_loss / max(seen, 1), "train_accuracy": correct / max(seen, 1),
               "val_accuracy": val_acc, "val_loss": val_loss}
        result.history.append(row)
        progress.line(f"epoch {epoch}/{epochs}: loss {row['loss']:.4f}, train accuracy {row['train_accuracy']:.3f}, "
                      f"val accuracy {val_acc:.3f}")
        key = (val_acc, -val_loss)
        if best_key is None or key > best_key:
            best_key = key
            best_state = {k: v.detach().cpu().clone() for k, v in tuner.model.state_dict().items()}
            result.best_epoch, result.val_accuracy = epoch, val_acc
        if steps >= total:
            break
    tuner.model.load_state_dict(best_state)
    progress.line(f"fine-tuning: best epoch {result.best_epoch}, val accuracy {result.val_accuracy:.3f}")
    return tuner.model.cpu().eval(), result


# -- progress --------------------------------------------------------------------------------------

class Progress:
    """Training's progress on stderr: a bar per stage (pipelines.progress), and lines between them."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def bar(self, total: int, desc: str) -> Bar:
        return Bar(desc, total, unit="step", quiet=self.quiet)

    def line(self, text: str) -> None:
        if not self.quiet:
            print(f"reelflow train: {text}", file=sys.stderr, flush=True)

