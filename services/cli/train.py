"""`reelflow train` and `reelflow evaluate`: a model on the user's own classes, and how good it is.

    $ reelflow train dataset/ --model x3d_xs --linear-probe -o ckpt.pyth
    $ reelflow classify video.mp4 --weights ckpt.pyth        # the dataset's class names
    $ reelflow evaluate dataset/ --weights ckpt.pyth --json -o report.json   # + report.png
"""

from __future__ import annotations

import argparse
import json
import sys

from services.cli.options import (add_device_option, add_json_option, add_model_options, add_overwrite_option,
                                  positive_int)
from services.cli.output import check_output, output_file


def add_commands(commands) -> None:
    train = commands.add_parser(
        "train", help="train a model on a folder of labelled videos (linear probe or fine-tuning)",
        description="DATASET_DIR holds train/ and val/ (optionally test/) folders of class folders of videos. "
                    "The checkpoint keeps the best epoch by validation accuracy and carries the class names: "
                    "`classify`, `submit`, `process` and `watch` with --weights CKPT answer with them.",
        epilog="example: reelflow train dataset/ --model x3d_xs --weights kinetics --linear-probe -o ckpt.pyth")
    train.add_argument("dataset", metavar="DATASET_DIR")
    add_model_options(train)
    train.add_argument("-o", "--output", required=True, metavar="CKPT", help="where the checkpoint goes (.pyth)")
    train.add_argument("--linear-probe", action="store_true",
                       help="freeze the backbone, cache the embeddings once, train only a new head (fast on a CPU)")
    train.add_argument("--epochs", type=positive_int, default=None,
                       help="epochs (default 100 for --linear-probe over cached embeddings, 5 for fine-tuning)")
    train.add_argument("--batch-size", type=positive_int, default=4, help="fine-tuning clips per step (default 4)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (default: 1e-2 probe, "
                                                              "1e-4 fine-tuning, 1e-3 from --weights none)")
    add_device_option(train, "training (cuda adds mixed precision)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_overwrite_option(train)
    train.set_defaults(run=run_train)

    evaluate = commands.add_parser(
        "evaluate", help="accuracy of a model on labelled videos: top-1, top-5, per class, confusion",
        description="DIR is a dataset root (its test/ split, else val/) or a folder of class folders. A video's "
                    "prediction is the mean of its segments' probabilities.",
        epilog="example: reelflow evaluate dataset/ --weights ckpt.pyth --json -o report.json")
    evaluate.add_argument("dataset", metavar="DIR")
    add_model_options(evaluate)
    add_json_option(evaluate, "print the report as JSON")
    evaluate.add_argument("-o", "--output", metavar="FILE",
                          help="also write the JSON report to FILE and the confusion matrix to FILE's name + .png")
    add_overwrite_option(evaluate)
    evaluate.set_defaults(run=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from pipelines.datasets import VideoFolder  # PyAV and torch load with the command

    check_output(args.output, args.overwrite)  # before hours of training
    VideoFolder.open(args.dataset)  # a bad layout fails in a moment, before torch loads

    from pipelines.training import TrainConfig, train  # torch loads here

    config = TrainConfig(model=args.model, weights=args.weights, epochs=args.epochs, linear_probe=args.linear_probe,
                         lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=args.device)
    if args.weights == "none":
        print("reelflow: warning: training from random weights (--weights none): fine for tests, poor for real "
              "videos", file=sys.stderr)
    result = train(args.dataset, config, args.output, quiet=args.quiet)
    print(f"{result.output}: {len(result.classes)} classes ({', '.join(result.classes)}), model {args.model}, "
          f"best epoch {result.best_epoch}, val accuracy {result.val_accuracy:.3f}, {result.seconds:.0f} s")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from pipelines.evaluation import confusion_png, evaluate_folder  # torch loads here

    def on_video(path, true, predicted):
        if not args.json:
            print(f"{'ok ' if true == predicted else 'BAD'}  {true:<20} -> {predicted:<20} {path}", flush=True)

    if args.output:  # before any work
        out = check_output(args.output, args.overwrite)
        report_png = check_output(out.with_suffix(".png") if out.suffix else out.with_name(out.name + ".png"),
                                  args.overwrite)
    report = evaluate_folder(args.dataset, args.model, args.weights, on_video)
    if args.output:
        with output_file(out, overwrite=args.overwrite) as f:
            f.write(json.dumps(report, indent=2) + "\n")
        confusion_png(report, report_png)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model {report['model']}  weights {report['weights']}  split {report['split']}  videos {report['videos']}")
    print(f"top-1 {report['top1']:.3f}" + (f"  top-5 {report['top5']:.3f}" if "top5" in report else ""))
    for name, row in report["per_class"].items():
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.3f}"
        print(f"  {name:<24} {row['correct']:>4}/{row['videos']:<4} {accuracy}")
    width = max(len(c) for c in report["classes"])
    print("confusion (rows: true, columns: predicted):")
    for name, row in zip(report["classes"], report["confusion"]):
        print(f"  {name:<{width}} " + " ".join(f"{v:>4}" for v in row))
    return 0
