"""Class names: the Kinetics-400 list shipped with the package, or a user's class map."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from pipelines.errors import InputError


@lru_cache(maxsize=1)
def kinetics400() -> tuple[str, ...]:
    """The 400 Kinetics class names; position i is the model zoo's class id i."""
    text = resources.files("pipelines").joinpath("data/kinetics400_labels.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def labels_for(num_classes: int, classmap: dict[str, int] | None = None,
               classes: list[str] | None = None) -> list[str]:
    """Names by class index. `classmap` (name -> index) replaces the Kinetics names; `classes` are
    the names a trained checkpoint carries (used when there is no classmap).

    >>> labels_for(3, {"run": 0, "jump": 2})
    ['run', 'class_1', 'jump']
    >>> labels_for(2, classes=["forklift", "person"])
    ['forklift', 'person']
    """
    if classmap is None and classes is not None and len(classes) == num_classes:
        return list(classes)
    if classmap is None:
        names = list(kinetics400())
        if len(names) != num_classes:
            names = [f"class_{i}" for i in range(num_classes)]
        return names
    names = [f"class_{i}" for i in range(num_classes)]
    for name, index in classmap.items():
        if not isinstance(index, int) or not 0 <= index < num_classes:
            raise InputError(
                f"classmap entry {name!r} -> {index!r} is not a class index in 0..{num_classes - 1}; "
                "fix the classmap"
            )
        names[index] = str(name)
    return names


def top_labels(probs, labels: list[str], k: int, decimals: int | None = None) -> tuple[list[str], list[float]]:
    """The k best class names and their probabilities, best first (ties: the lower class index first);
    `probs` is one clip's (num_classes,) array or tensor. `decimals` rounds the scores.

    >>> top_labels([0.1, 0.7, 0.2], ["a", "b", "c"], 2)
    (['b', 'c'], [0.7, 0.2])
    """
    import numpy as np

    values = np.asarray(probs, dtype=np.float64 if decimals is not None else None).reshape(-1)
    best = np.argsort(-values, kind="stable")[:k]
    scores = [float(values[i]) if decimals is None else round(float(values[i]), decimals) for i in best]
    return [labels[i] for i in best], scores
