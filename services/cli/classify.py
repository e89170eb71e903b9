"""`reelflow classify`: one video, in process, under the same source policy as a stack.

The work runs in a child process that this one watches: if FFmpeg crashes on a crafted file
(a segfault takes the whole process with it), the user gets a one-line error and exit status 1,
not a core dump. The source must lie under REELFLOW_ALLOWED_ROOTS, or, unset, in the working
directory or be the file named on the command line; URLs follow the stack's URL policy; FFmpeg
gets the protocol and format whitelists, and the pixel, frame and duration bounds hold while decoding.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys

from pipelines.errors import ReelflowError
from pipelines.models import get_spec, is_random_weights
from pipelines.sources import open_checked
from services.cli.options import (add_device_option, add_json_option, add_model_options, add_runtime_option,
                                  add_segment_options, with_runtime,
                                  positive_int)
from services.cli.output import SegmentWriter

CHILD = "REELFLOW_CLASSIFY_CHILD"  # set in the watched child: it does the work


def add_commands(commands, examples: str) -> None:
    classify = commands.add_parser(
        "classify",
        help="classify one video in this process and print its segments",
        description=(
            "Cut a video into segments (the model's clip length, or --stride apart, plus a tail "
            "segment ending at the video's end) and print the top labels of each."
        ),
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    classify.add_argument("path", help="video file (any container/codec FFmpeg reads)")
    add_model_options(classify)
    add_segment_options(classify, embeddings=False)
    add_device_option(classify, "the model")
    add_runtime_option(classify, "the model's forward passes")
    classify.add_argument("--batch-size", type=positive_int, default=4, help="most clips per forward pass (default 4)")
    add_json_option(classify, "one JSON object per segment (JSON lines)")
    classify.add_argument("--embeddings", action="store_true", help="with --json: include each segment's embedding")
    classify.set_defaults(run=run_classify)


def run_classify(args) -> int:
    if os.environ.get(CHILD) != "1":
        return _watch_child(args.path)
    return _classify(args)


def _watch_child(path: str) -> int:
    child = subprocess.Popen([sys.executable, "-m", "services", *sys.argv[1:]], env={**os.environ, CHILD: "1"})
    try:
        status = child.wait()
    except KeyboardInterrupt:  # the child got the same Ctrl-C: let it finish its line
        child.wait()
        return 130
    if status < 0:  # killed by a signal: a crash in FFmpeg or torch, or the OOM killer
        name = signal.Signals(-status).name
        raise ReelflowError(f"the decoder died ({name}) reading {path!r}: the file is probably corrupt or crafted "
                            "to crash FFmpeg; nothing else was affected")
    return status


def _classify(args) -> int:
    from pipelines.classifier import ActionClassifier  # torch: loads in the child that does the work
    from services.settings import Settings, default_allowed_roots

    default_allowed_roots([args.path], [args.model])  # the working directory and the file named here
    settings = with_runtime(Settings.from_env(), args)
    policy = settings.sources
    spec = get_spec(args.model)
    # a bad path or video fails now, before the model loads
    source, options, _ = open_checked(args.path, policy, spec.clip_seconds, args.stride)
    _show_conversions()
    clf = ActionClassifier(args.model, weights=args.weights, topk=args.topk, device=args.device,
                           batch_size=args.batch_size, runtime=settings.runtime, cache_dir=settings.model_cache_dir)
    if is_random_weights(clf.weights_id):
        print("reelflow: warning: random weights (--weights none): labels and scores are meaningless",
              file=sys.stderr)
    if not args.json:
        print(f"{args.path}  model {clf.spec.name}  weights {clf.weights_id}  runtime {clf.clip_model.runtime}")
        print(f"{'#':>3} {'start':>8} {'end':>8} {'frames':>6}  top labels (score)")
    writer = SegmentWriter(sys.stdout) if args.json else None
    for seg in clf.iter_video(source, args.stride, open_options=options, limits=policy):
        if writer is not None:
            writer.write(seg.to_dict(embedding="list" if args.embeddings else None))
        else:
            top = ", ".join(f"{label} ({score:.3f})" for label, score in zip(seg.labels, seg.scores))
            print(f"{seg.index:>3} {seg.start_s:>8.2f} {seg.end_s:>8.2f} {seg.frames:>6}  {top or '(no frames)'}",
                  flush=True)
    return 0


def _show_conversions() -> None:
    """A model's first conversion for a runtime takes seconds to minutes: say so on stderr."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("reelflow: %(message)s"))
    runtime_log = logging.getLogger("reelflow.runtime")
    runtime_log.addHandler(handler)
    runtime_log.setLevel(logging.INFO)
    runtime_log.propagate = False
