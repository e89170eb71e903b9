"""Choosing the runtime from the command line: `up`, `classify` and `submit --runtime`, what `up`
and `status` say runs where, and the one-line errors of a runtime that cannot run."""

from __future__ import annotations

import json

import pytest

from support.stack_process import UpProcess, reelflow, run, stack_env, wait_until


def test_up_and_status_say_which_runtime_each_model_runs_and_a_job_may_choose_its_own(tmp_path, clip_10s):
    home = tmp_path / "home"
    env = stack_env(home)
    up = UpProcess(home, env, "--no-ray", "--weights", "none")
    try:
        assert "x3d_xs on openvino" in up.log_path.read_text()  # the default on a CPU: the fast runtime
        run(env, "submit", clip_10s, "--weights", "none", "--runtime", "torch", "--wait")

        def runtimes():
            models = json.loads(run(env, "status", "--json").stdout)["models"]
            return sorted(m["runtime"] for m in models) == ["openvino", "torch"] and models

        models = wait_until(runtimes, 30, "status does not show both runtimes", up)
        assert all(m["runtime_note"] is None for m in models)
        text = run(env, "status").stdout
        assert "1 replica(s) on openvino" in text and "1 replica(s) on torch" in text
    finally:
        up.stop()


def test_an_explicit_torch_stack_runs_torch(tmp_path):
    home = tmp_path / "home"
    up = UpProcess(home, stack_env(home), "--no-ray", "--weights", "none", "--runtime", "torch")
    try:
        assert "x3d_xs on torch" in up.log_path.read_text()
    finally:
        up.stop()


@pytest.mark.slow  # a stack; tests/unit/test_runtimes.py checks the fallback itself in the fast tests
def test_a_model_cache_that_cannot_be_written_is_a_note_and_torch(tmp_path):
    home, blocked = tmp_path / "home", tmp_path / "a-file"
    blocked.write_text("not a directory")
    up = UpProcess(home, stack_env(home, REELFLOW_MODEL_CACHE=str(blocked / "cache")), "--no-ray", "--weights", "none")
    try:
        log = up.log_path.read_text()
        assert f"note: x3d_xs runs on torch: cannot write to the model cache {blocked}" in log, log
        assert "x3d_xs on torch" in log and "Traceback" not in log
    finally:
        up.stop()


@pytest.mark.slow  # a Ray stack: the replica's own error reaches `up`'s output, not only Serve's
def test_replicas_that_cannot_start_say_why_in_ups_output(tmp_path):
    home, blocked = tmp_path / "home", tmp_path / "a-file"
    blocked.write_text("not a directory")
    up = UpProcess(home, stack_env(home, REELFLOW_MODEL_CACHE=str(blocked / "cache")), "--weights", "none",
                   "--runtime", "openvino")
    try:
        log = up.log_path.read_text()
        assert ("warning: cannot start x3d_xs replicas with weights 'none': x3d_xs: cannot write to the model "
                f"cache {blocked}") in log, log
    finally:
        up.stop()
    assert "reelflow up: stopped" in up.log_path.read_text()


def test_a_runtime_that_cannot_run_here_is_one_line(tmp_path, clip_10s):
    env = stack_env(tmp_path / "home")
    for args in (["up", "--runtime", "openvino", "--device", "cuda"],
                 ["classify", str(clip_10s), "--weights", "none", "--runtime", "openvino", "--device", "cuda"]):
        result = reelflow(*args, env=env, check=False)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert lines == ["reelflow: error: --runtime openvino runs on CPUs only; use --runtime torch (or auto) "
                         "with --device cuda"], result.stderr
    bad = reelflow("submit", str(clip_10s), "--runtime", "tensorrt", env=env, check=False)
    assert bad.returncode == 2 and "invalid choice: 'tensorrt'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # two model loads in fresh processes; `up` says its runtime in the fast tests
def test_classify_says_its_runtime(tmp_path, clip_10s):
    env = stack_env(tmp_path / "home")
    out = reelflow("classify", str(clip_10s), "--weights", "none", "--runtime", "openvino", env=env).stdout
    assert out.splitlines()[0].endswith("runtime openvino")
    out = reelflow("classify", str(clip_10s), "--weights", "none", "--runtime", "torch", env=env).stdout
    assert out.splitlines()[0].endswith("runtime torch")
