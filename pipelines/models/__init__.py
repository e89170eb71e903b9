"""Models: what each is and how it is fed (`spec`, `table`, `hf` for Hugging Face classifiers, all
torch-free), and where its weights come from (`weight_files`, torch-free; `weights` and
`hf_backend` build the torch modules).

    >>> from pipelines.models import get_spec
    >>> get_spec("x3d_xs").num_frames
    4
"""

from pipelines.models.spec import ASSUMED_FPS, MEAN, MODEL_ZOO_URL, STD, ModelSpec
from pipelines.models.table import (DEFAULT_MODEL, DEFAULT_WEIGHTS, MODELS, RANDOM_SEED, RANDOM_WEIGHTS_ID, get_spec,
                                    is_random_weights, model_name, model_slug)

__all__ = ["ASSUMED_FPS", "DEFAULT_MODEL", "DEFAULT_WEIGHTS", "MEAN", "MODELS", "MODEL_ZOO_URL", "RANDOM_SEED",
           "RANDOM_WEIGHTS_ID", "STD", "ModelSpec", "get_spec", "is_random_weights", "model_name", "model_slug"]
