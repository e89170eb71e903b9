"""`reelflow` as a user runs it: a real process, real videos, real output."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REELFLOW = str(Path(sys.executable).parent / "reelflow")


def run(*args, env=None, check=False):
    result = subprocess.run([REELFLOW, *map(str, args)], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_classify_prints_a_table_of_segments(clip_10s):
    result = run("classify", clip_10s, "--weights", "none", check=True)
    lines = result.stdout.strip().splitlines()
    assert "x3d_xs" in lines[0] and "random" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [row[1] for row in rows] == ["0.00", "1.60", "3.20", "4.80", "6.40", "8.00", "8.40"]
    assert rows[-1][2] == "10.00"
    assert "random weights" in result.stderr


@pytest.mark.shared_data
def test_classify_json_on_a_real_video(shared_videos):
    result = run("classify", shared_videos / "mm_demo.mp4", "--weights", "none", "--json", check=True)
    segments = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["start_s"] for s in segments] == [0.0, 1.6, 3.2, 4.8, 6.4, 8.0, 8.4]
    assert segments[-1]["end_s"] == 10.0
    for s in segments:
        assert len(s["labels"]) == 5 and s["scores"] == sorted(s["scores"], reverse=True)
        assert s["random_weights"] is True and "embedding" not in s


def test_classify_json_with_embeddings_stride_and_topk(clip_10s):
    result = run("classify", clip_10s, "--weights", "none", "--json", "--embeddings", "--stride", "2.5",
                 "--topk", "3", "--model", "x3d_xs", check=True)
    segments = [json.loads(line) for line in result.stdout.splitlines()]
    assert [s["start_s"] for s in segments] == [0.0, 2.5, 5.0, 7.5, 8.4]
    assert all(len(s["embedding"]) == s["embedding_dim"] == 2048 and len(s["labels"]) == 3 for s in segments)


def test_classify_with_a_checkpoint(clip_10s, peaked_checkpoint):
    ckpt, _ = peaked_checkpoint("x3d_xs")
    result = run("classify", clip_10s, "--weights", ckpt, "--json", check=True)
    first = json.loads(result.stdout.splitlines()[0])
    assert first["weights"].startswith("x3d_xs.pyth (sha256") and first["random_weights"] is False
    assert first["scores"][0] > 0.2
    assert "random weights" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["classify", "/no/such/video.mp4", "--weights", "none"], "no such file"),
        (["classify", __file__, "--weights", "none"], "as video"),
        (["classify", "{video}", "--weights", "/no/such.pyth"], "is not a file"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(clip_10s, args, message):
    result = run(*[a.format(video=clip_10s) for a in args])
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("reelflow: error: ")


def test_kinetics_offline_is_one_line_naming_the_checkpoint_url(clip_10s, tmp_path):
    result = run("classify", clip_10s, env={"TORCH_HOME": str(tmp_path), "REELFLOW_MODEL_ZOO_URL": "http://127.0.0.1:9/kinetics"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "http://127.0.0.1:9/kinetics/X3D_XS.pyth" in result.stderr
    assert str(tmp_path / "hub" / "checkpoints" / "X3D_XS.pyth") in result.stderr


@pytest.mark.parametrize("args", [["classify", "x.mp4", "--model", "resnet9000"], ["classify", "x.mp4", "--topk", "0"],
                                  ["classify", "x.mp4", "--stride", "-1"]])
def test_bad_options_are_usage_errors(args):
    result = run(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "usage:" in result.stderr


def test_models_lists_the_table():
    rows = json.loads(run("models", "--json", check=True).stdout)
    assert {r["name"]: r["embedding_dim"] for r in rows}["slowfast_r50"] == 2304
    assert len(rows) == 11


@pytest.mark.parametrize("command", [[], ["classify"], ["models"]])
def test_help_teaches(command):
    result = run(*command, "--help", check=True)
    assert result.stdout.startswith("usage: reelflow")
    if command != ["models"]:
        assert "examples:" in result.stdout


HEAVY = ("torch", "av", "numpy", "ray", "redis", "pydantic", "opentelemetry")


def test_the_parser_loads_none_of_the_heavy_libraries():
    # each loads in the commands that use it: numpy alone is a tenth of a second, redis-py (with
    # OpenTelemetry's metrics SDK) and pydantic-settings a fifth each; `--help` needs none of them
    code = ("import sys, services.cli; services.cli.build_parser(); "
            f"print(*(name in sys.modules for name in {HEAVY!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert dict(zip(HEAVY, out.split())) == {name: "False" for name in HEAVY}


@pytest.mark.parametrize("variable, value", [("REELFLOW_LEASE_S", "soon"), ("REELFLOW_BATCH_SIZE", "-1"),
                                             ("REELFLOW_CLIP_FORMAT", "jpeg")])
def test_a_bad_setting_is_one_line_naming_the_variable(variable, value, tmp_path):
    env = {**os.environ, variable: value, "REELFLOW_HOME": str(tmp_path)}
    result = subprocess.run([REELFLOW, "status"], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"reelflow: error: {variable}=") and "Traceback" not in result.stderr
