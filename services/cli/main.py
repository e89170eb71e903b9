"""The `reelflow` command: the parser, and the one place errors become one line and an exit status.
Each command lives in a module of this package, which parses and prints only; torch, PyAV, Ray and
FastAPI load inside the commands that need them, so `reelflow --help` and client commands start fast.

    $ reelflow classify video.mp4 --model x3d_xs --weights none
    $ reelflow classify video.mp4 --json --embeddings > segments.jsonl
    $ reelflow models
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.errors import ReelflowError, one_line
from pipelines.models import MODELS
from services.cli import classify, clips, jobs, search, stack, streams, train, view
from services.cli.options import add_json_option, home_parent

EXAMPLES = """\
examples:
  reelflow classify video.mp4                          # in this process: x3d_xs, Kinetics-400 weights
  reelflow classify video.mp4 --model slowfast_r50 --topk 3 --json
  reelflow up &                                        # the stack: embedded Redis + a worker
  reelflow submit videos/*.mp4 --wait                  # bulk jobs, with progress
  reelflow status; reelflow results JOB --format csv -o job.csv
  reelflow process videos/*.mp4 --out results/         # one shot: stack up, submit, wait, export
  reelflow dlq list                                    # jobs that failed, and why
  reelflow watch rtsp://cam1/stream --name door        # a live camera, classified continuously
  reelflow tail door --json                            # its results as they come
  reelflow search --like clip.mp4 --at 12              # moments like this one, in every indexed segment
  reelflow report segments.jsonl --video video.mp4 -o report.html   # timeline, scores, look-alikes
  reelflow annotate video.mp4 segments.jsonl -o annotated.mp4        # labels drawn on the video
  reelflow train dataset/ --linear-probe -o ckpt.pyth  # your own classes: train/ and val/ class folders
  reelflow evaluate dataset/ --weights ckpt.pyth --json  # top-1, top-5, per class, confusion
  reelflow models                                      # the models and how they sample
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):  # `reelflow` alone
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except ReelflowError as e:
        print(f"reelflow: error: {one_line(e, limit=2000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("reelflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `reelflow classify ... | head`
        sys.stderr.close()
        return 0
    except Exception as e:  # Redis went away after the command had connected: one line; else a bug
        if not _lost_redis(e):
            raise
        print(f"reelflow: error: lost Redis ({one_line(e, limit=300)}); is the stack up? run the command again "
              "once it is", file=sys.stderr)
        return 1


def _lost_redis(error: Exception) -> bool:
    """Whether `error` is Redis gone away (services.store.outage.StoreUnavailable). Redis loads only
    with the commands that use it: without it, no error can be Redis's."""
    if "redis" not in sys.modules:
        return False
    from services.store.outage import StoreUnavailable

    return isinstance(error, StoreUnavailable)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reelflow",
        description="Classify the actions in videos, segment by segment, with PyTorchVideo models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    home = home_parent()
    classify.add_commands(commands, EXAMPLES)
    stack.add_commands(commands, home)
    jobs.add_commands(commands, home)
    streams.add_commands(commands, home)
    clips.add_commands(commands, home)
    view.add_commands(commands, home)
    search.add_commands(commands, home)
    train.add_commands(commands)
    models = commands.add_parser("models", help="list the models and how each samples a clip")
    add_json_option(models)
    models.set_defaults(run=run_models)
    return parser


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
    print("\nand hf:DIR or hf:org/name: a Hugging Face video classifier (VideoMAE, TimeSformer, ViViT...), "
          "fed as its processor config says (pip install 'reelflow[hf]')")
    return 0
