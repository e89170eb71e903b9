"""The `reelflow` command. Each subcommand imports torch and PyAV only when it runs.

    $ reelflow classify video.mp4 --model x3d_xs --weights none
    $ reelflow classify video.mp4 --json --embeddings > segments.jsonl
    $ reelflow models
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.errors import ReelflowError
from pipelines.models import DEFAULT_MODEL, DEFAULT_WEIGHTS, MODELS

EXAMPLES = """\
examples:
  reelflow classify video.mp4                          # x3d_xs, Kinetics-400 weights
  reelflow classify video.mp4 --model slowfast_r50 --topk 3
  reelflow classify video.mp4 --stride 0.8 --json      # overlapping segments, JSON lines
  reelflow classify video.mp4 --weights my.pyth        # your own checkpoint
  reelflow models                                      # the models and how they sample
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except ReelflowError as e:
        print(f"reelflow: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reelflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `reelflow classify ... | head`
        sys.stderr.close()
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reelflow",
        description="Classify the actions in videos, segment by segment, with PyTorchVideo models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    classify = commands.add_parser(
        "classify",
        help="classify one video in this process and print its segments",
        description=(
            "Cut a video into segments (the model's clip length, or --stride apart, plus a tail "
            "segment ending at the video's end) and print the top labels of each."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    classify.add_argument("path", help="video file (any container/codec FFmpeg reads)")
    add_model_options(classify)
    classify.add_argument("--topk", type=positive_int, default=5, help="labels per segment (default 5)")
    classify.add_argument("--stride", type=positive_float, default=None, metavar="SECONDS",
                          help="seconds between segment starts (default: the model's clip length)")
    classify.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0 (default cpu)")
    classify.add_argument("--batch-size", type=positive_int, default=4, help="most clips per forward pass (default 4)")
    classify.add_argument("--json", action="store_true", help="one JSON object per segment (JSON lines)")
    classify.add_argument("--embeddings", action="store_true", help="with --json: include each segment's embedding")
    classify.set_defaults(run=run_classify)

    models = commands.add_parser("models", help="list the models and how each samples a clip")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(run=run_models)
    return parser


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS), metavar="MODEL",
                        help=f"one of: {', '.join(MODELS)} (default {DEFAULT_MODEL})")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="WEIGHTS",
                        help="'kinetics' (official checkpoint, downloaded once), a checkpoint path, "
                             "or 'none' (random init, for tests)")


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


def run_classify(args: argparse.Namespace) -> int:
    from pipelines.classifier import ActionClassifier
    from pipelines.decode import open_video
    from pipelines.models import is_random_weights

    open_video(args.path).close()  # a bad path fails now, before the model loads
    clf = ActionClassifier(args.model, weights=args.weights, topk=args.topk, device=args.device,
                           batch_size=args.batch_size)
    if is_random_weights(clf.weights_id):
        print("reelflow: warning: random weights (--weights none): labels and scores are meaningless",
              file=sys.stderr)
    if not args.json:
        print(f"{args.path}  model {clf.spec.name}  weights {clf.weights_id}")
        print(f"{'#':>3} {'start':>8} {'end':>8} {'frames':>6}  top labels (score)")
    for seg in clf.iter_video(args.path, args.stride):
        if args.json:
            print(json.dumps(seg.to_dict(embedding="list" if args.embeddings else None)), flush=True)
        else:
            top = ", ".join(f"{label} ({score:.3f})" for label, score in zip(seg.labels, seg.scores))
            print(f"{seg.index:>3} {seg.start_s:>8.2f} {seg.end_s:>8.2f} {seg.frames:>6}  {top or '(no frames)'}",
                  flush=True)
    return 0


def run_models(args: argparse.Namespace) -> int:
    if args.json:
        rows = [dict(name=s.name, frames=s.num_frames, sampling_rate=s.sampling_rate, side_size=s.side_size,
                     crop_size=s.crop_size, clip_seconds=s.clip_seconds, embedding_dim=s.embedding_dim,
                     slowfast_alpha=s.slowfast_alpha, checkpoint_url=s.checkpoint_url) for s in MODELS.values()]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<16} {'frames x rate':>13} {'side/crop':>10} {'clip s':>7} {'embedding':>9}")
    for s in MODELS.values():
        print(f"{s.name:<16} {f'{s.num_frames} x {s.sampling_rate}':>13} {f'{s.side_size}/{s.crop_size}':>10} "
              f"{s.clip_seconds:>7.2f} {s.embedding_dim:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
