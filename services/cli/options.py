"""The options several commands share, defined once: the reelflow home, the model and its weights,
what a job computes (top-k, stride, embeddings), and the output file options.
"""

from __future__ import annotations

import argparse

from pipelines.errors import UnknownModelError
from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS, MODELS, model_name


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def model_arg(text: str) -> str:
    """--model: a model of the table, or hf:DIR / hf:org/name (a directory becomes its absolute path)."""
    try:
        return model_name(text)
    except UnknownModelError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def home_parent() -> argparse.ArgumentParser:
    """--home, for every command that talks to a stack (a parent parser)."""
    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", metavar="DIR", help="reelflow home of the embedded Redis "
                      "(default $REELFLOW_HOME or ~/.local/share/reelflow; ignored with REELFLOW_REDIS_URL)")
    return home


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, type=model_arg, metavar="MODEL",
                        help=f"one of: {', '.join(MODELS)} (default {DEFAULT_MODEL}); or hf:DIR, a Hugging Face "
                             "video classifier (VideoMAE...) saved with save_pretrained, or hf:org/name from the hub")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="WEIGHTS",
                        help=f"'kinetics' (official checkpoint, downloaded once; for hf: models, the weights saved "
                             "with the model), a checkpoint path (e.g. from `reelflow train`), or 'none' (random "
                             f"init, for tests); default {DEFAULT_WEIGHTS!r}")


def add_runtime_option(parser: argparse.ArgumentParser, what: str = "the models") -> None:
    from pipelines.runtimes import CHOICES  # torch-free: only looks for OpenVINO when asked

    parser.add_argument("--runtime", choices=CHOICES, default=None,
                        help=f"where {what} run: openvino (CPUs; 2-4x PyTorch eager, the same numbers), torch, or "
                             "auto: OpenVINO on a CPU where it is installed, else torch (default $REELFLOW_RUNTIME, "
                             "else auto); a model is converted once and kept in $REELFLOW_HOME/models")


def with_runtime(settings, args):
    """The settings with `--runtime` applied; an explicit runtime that cannot run here is a one-line
    error now, before anything starts."""
    from pipelines.runtimes import resolve

    if getattr(args, "runtime", None):
        settings = settings.replace(runtime=args.runtime)
    resolve(settings.runtime, getattr(args, "device", "cpu"))
    return settings


def add_segment_options(parser: argparse.ArgumentParser, embeddings: bool = True) -> None:
    """--topk and --stride (and --no-embeddings for jobs, which store them by default)."""
    parser.add_argument("--topk", type=positive_int, default=5, help="labels per segment (default 5)")
    parser.add_argument("--stride", type=positive_float, default=None, metavar="SECONDS",
                        help="seconds between segment starts (default: the model's clip length)" + (
                            "" if embeddings else "; a live stream with a longer one (a label every 10 s, say) "
                            "leaves the GOPs between its windows undecoded: cameras cost a fraction"))
    if embeddings:
        parser.add_argument("--no-embeddings", action="store_true",
                            help="do not store segment embeddings (nor index them for `reelflow search`)")


def add_index_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--no-index", action="store_true",
                        help=f"leave {what} out of the vector index that `reelflow search` searches")


def add_sink_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--sink", action="append", default=[], metavar="URL", dest="sinks",
                        help=f"also deliver {what} here (repeatable): https://host/path (a signed webhook), "
                             "mqtt(s)://[user:pass@]host:port[/prefix], file:///DIR (JSON lines); at least once, "
                             "in order")


def add_device_option(parser: argparse.ArgumentParser, what: str = "the models") -> None:
    parser.add_argument("--device", default="cpu", help=f"torch device for {what}, e.g. cpu or cuda:0 (default cpu)")


def add_no_ray_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-ray", action="store_true", help="run the data plane in this process instead of on Ray")


def add_json_option(parser: argparse.ArgumentParser, help: str = "machine-readable output") -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that exist already (default: refuse, and change nothing)")
