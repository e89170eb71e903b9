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
  reelflow classify video.mp4                          # in this process: x3d_xs, Kinetics-400 weights
  reelflow classify video.mp4 --model slowfast_r50 --topk 3 --json
  reelflow up &                                        # the stack: embedded Redis + a worker
  reelflow submit videos/*.mp4 --wait                  # bulk jobs, with progress
  reelflow status; reelflow results JOB --format csv -o job.csv
  reelflow process videos/*.mp4 --out results/         # one shot: stack up, submit, wait, export
  reelflow dlq list                                    # jobs that failed, and why
  reelflow watch rtsp://cam1/stream --name door        # a live camera, classified continuously
  reelflow tail door --json                            # its results as they come
  reelflow report segments.jsonl --video video.mp4 -o report.html   # timeline, scores, look-alikes
  reelflow annotate video.mp4 segments.jsonl -o annotated.mp4        # labels drawn on the video
  reelflow train dataset/ --linear-probe -o ckpt.pyth  # your own classes: train/ and val/ class folders
  reelflow evaluate dataset/ --weights ckpt.pyth --json  # top-1, top-5, per class, confusion
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

    add_stack_commands(commands)

    from services.train_commands import add_train_commands

    add_train_commands(commands, add_model_options, positive_int)

    models = commands.add_parser("models", help="list the models and how each samples a clip")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(run=run_models)
    return parser


def add_stack_commands(commands) -> None:
    from services import client_commands as client

    home = argparse.ArgumentParser(add_help=False)
    home.add_argument("--home", metavar="DIR", help="reelflow home of the embedded Redis "
                      "(default $REELFLOW_HOME or ~/.local/share/reelflow; ignored with REELFLOW_REDIS_URL)")

    up = commands.add_parser("up", parents=[home], help="run the stack (Redis + worker) until stopped",
                             description="Start the embedded Redis (unless REELFLOW_REDIS_URL is set) and a "
                                         "job worker in this process; Ctrl-C hands the job in hand back and stops.")
    up.add_argument("--model", action="append", type=model_arg, metavar="MODEL",
                    help=f"serve this model from the start (repeatable; default {DEFAULT_MODEL}); others on first use")
    up.add_argument("--weights", default=DEFAULT_WEIGHTS, help="weights of the --model models (default kinetics)")
    up.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    up.add_argument("--keep-redis", action="store_true", help="leave the embedded Redis running on exit")
    up.add_argument("--no-ray", action="store_true", help="run the data plane in this process instead of on Ray")
    up.add_argument("--http-port", type=int, metavar="P",
                    help="serve the HTTP API (/v1, OpenAPI at /openapi.json) on port P; bearer-token auth when "
                         "REELFLOW_API_TOKEN is set")
    up.add_argument("--http-host", metavar="ADDR", help="address the HTTP API listens on "
                    "(default $REELFLOW_API_HOST or 127.0.0.1: this machine only)")
    up.set_defaults(run=run_up)

    submit = commands.add_parser("submit", parents=[home], help="queue videos as jobs on a running stack",
                                 epilog="The job message is documented in the README; any Redis client can XADD one.")
    submit.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="video files or URLs")
    add_model_options(submit)
    submit.add_argument("--topk", type=positive_int, default=5, help="labels per segment (default 5)")
    submit.add_argument("--stride", type=positive_float, default=None, metavar="SECONDS",
                        help="seconds between segment starts (default: the model's clip length)")
    submit.add_argument("--no-embeddings", action="store_true", help="do not store segment embeddings")
    submit.add_argument("--idempotency-key", metavar="KEY",
                        help="resubmitting with the same key (per source) returns the first job instead of a new one")
    submit.add_argument("--priority", type=int, default=0, help="stored with the job (scheduling by priority: planned)")
    submit.add_argument("--wait", action="store_true", help="follow the jobs until they end; exit 0 only if all are done")
    submit.add_argument("--json", action="store_true", help="machine-readable output")
    submit.set_defaults(run=client.run_submit)

    process = commands.add_parser("process", parents=[home], help="up + submit + wait + export, in one command",
                                  description="Start the stack, submit the videos, wait, write OUT/<video stem>.jsonl "
                                              "per video and print a summary; exit 0 only if every job is done.")
    process.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="video files or URLs")
    add_model_options(process)
    process.add_argument("--out", default="reelflow-results", metavar="DIR",
                         help="where the per-video JSON lines go (default ./reelflow-results)")
    process.add_argument("--topk", type=positive_int, default=5, help="labels per segment (default 5)")
    process.add_argument("--stride", type=positive_float, default=None, metavar="SECONDS",
                         help="seconds between segment starts (default: the model's clip length)")
    process.add_argument("--no-embeddings", action="store_true", help="do not store segment embeddings")
    process.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    process.add_argument("--no-ray", action="store_true", help="run the data plane in this process instead of on Ray")
    process.set_defaults(run=run_process)

    status = commands.add_parser("status", parents=[home], help="one job, or the whole stack")
    status.add_argument("job", nargs="?", metavar="JOB")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=client.run_status)

    results = commands.add_parser("results", parents=[home], help="a job's segment results")
    results.add_argument("job", metavar="JOB")
    results.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="jsonl (default) or csv")
    results.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    results.set_defaults(run=client.run_results)

    cancel = commands.add_parser("cancel", parents=[home], help="cancel a job that has not ended")
    cancel.add_argument("job", metavar="JOB")
    cancel.set_defaults(run=client.run_cancel)

    dlq = commands.add_parser("dlq", parents=[home], help="the dead-letter list: failed jobs and why")
    dlq.add_argument("action", nargs="?", choices=["list", "replay"], default="list")
    dlq.add_argument("job", nargs="?", metavar="JOB", help="with replay: the job to queue again")
    dlq.add_argument("--json", action="store_true", help="machine-readable output")
    dlq.set_defaults(run=client.run_dlq)

    add_stream_commands(commands, home)
    add_view_commands(commands, home)


def add_stream_commands(commands, home: argparse.ArgumentParser) -> None:
    from services import stream_commands as streams

    watch = commands.add_parser("watch", parents=[home], help="classify a live stream continuously on a running stack",
                                description="Register a live source; a worker of the stack reads it, reconnecting "
                                            "when it drops, and publishes a result per window. Follow it with "
                                            "`reelflow tail NAME`.",
                                epilog="URL: rtsp:// or rtsps:// (--transport tcp|udp), http(s):// live (HLS, "
                                       "MPEG-TS, MJPEG), udp:// or rtp://, or a local file played in real time "
                                       "and looped (demos, tests).")
    watch.add_argument("url", metavar="URL")
    watch.add_argument("--name", required=True, help="the stream's name (letters, digits, . _ -)")
    add_model_options(watch)
    watch.add_argument("--stride", type=positive_float, default=None, metavar="SECONDS",
                       help="seconds between window starts (default: the model's clip length)")
    watch.add_argument("--transport", choices=["tcp", "udp"], default="tcp", help="RTSP transport (default tcp)")
    watch.add_argument("--topk", type=positive_int, default=5, help="labels per segment (default 5)")
    watch.add_argument("--smoothing", type=positive_int, default=3, metavar="K",
                       help="moving average of scores over the last K segments (default 3)")
    watch.add_argument("--enter", type=float, default=0.5, help="smoothed score at which a label starts (default 0.5)")
    watch.add_argument("--exit", type=float, default=0.3, help="smoothed score below which it ends (default 0.3)")
    watch.set_defaults(run=streams.run_watch)

    tail = commands.add_parser("tail", parents=[home], help="follow a stream's results as they come")
    tail.add_argument("name", metavar="NAME")
    tail.add_argument("--json", action="store_true", help="JSON lines: index, start_s, end_s, labels, scores, "
                                                          "captured_at, published_at, smoothed")
    tail.add_argument("--from-start", action="store_true", help="print the kept results first, then follow")
    tail.add_argument("--count", type=positive_int, default=None, metavar="N", help="stop after N results")
    tail.add_argument("--events", action="store_true",
                      help="print the stream's label events (enter/exit of the smoothed top label) kept so far")
    tail.set_defaults(run=streams.run_tail)

    listing = commands.add_parser("streams", parents=[home], help="list the watched streams, or stop one",
                                  description="`streams list`: state, reconnects, dropped clips, segments, latency. "
                                              "`streams stop NAME`: stop watching (results are kept).")
    listing.add_argument("action", nargs="?", choices=["list", "stop"], default="list")
    listing.add_argument("name", nargs="?", metavar="NAME", help="with stop: the stream to stop")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=streams.run_streams)


def add_view_commands(commands, home: argparse.ArgumentParser) -> None:
    from services.report import commands as view

    results_help = ("a job id of the running stack, or a JSON-lines file of segment results "
                    "(`reelflow classify VIDEO --json --embeddings`, `reelflow results JOB`)")
    report = commands.add_parser("report", parents=[home], help="an HTML report of a video's segments",
                                 description="Write one self-contained HTML file (it opens offline): the top label "
                                             "per segment over time, the top classes' scores, which parts of the "
                                             "video look alike (embedding similarity), labels by total time.")
    report.add_argument("results", metavar="JOB_OR_JSONL", help=results_help)
    report.add_argument("--video", metavar="PATH", help="the video the results are of: a thumbnail per segment")
    report.add_argument("-o", "--output", default="report.html", metavar="FILE", help="default report.html")
    report.set_defaults(run=view.run_report)

    annotate = commands.add_parser("annotate", parents=[home], help="draw each segment's top labels on the video",
                                   description="Write the video (H.264 MP4, same frames, frame rate and timestamps) "
                                               "with the current segment's top labels and scores on every frame.")
    annotate.add_argument("video", metavar="VIDEO")
    annotate.add_argument("results", metavar="JOB_OR_JSONL", help=results_help)
    annotate.add_argument("-o", "--output", metavar="FILE", help="default: VIDEO's name + -annotated.mp4, here")
    annotate.set_defaults(run=view.run_annotate)


def run_up(args: argparse.Namespace) -> int:
    from services.up import run_up as up

    return up(args)


def run_process(args: argparse.Namespace) -> int:
    from services.process import run_process as process

    return process(args)


def model_arg(text: str) -> str:
    """--model: a model of the table, or hf:DIR / hf:org/name (a directory becomes its absolute path)."""
    from pipelines.errors import UnknownModelError
    from pipelines.models import model_name

    try:
        return model_name(text)
    except UnknownModelError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, type=model_arg, metavar="MODEL",
                        help=f"one of: {', '.join(MODELS)} (default {DEFAULT_MODEL}); or hf:DIR, a Hugging Face "
                             "video classifier (VideoMAE...) saved with save_pretrained, or hf:org/name from the hub")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="WEIGHTS",
                        help="'kinetics' (official checkpoint, downloaded once; for hf: models, the weights saved "
                             "with the model), a checkpoint path (e.g. from `reelflow train`), or 'none' (random "
                             "init, for tests)")


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
    from services.classify_command import run_classify as classify

    return classify(args)


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


if __name__ == "__main__":
    sys.exit(main())
