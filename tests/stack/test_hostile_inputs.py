"""Hostile input: every bad source refused in one line, no crash, no hang, nothing read that should not be.

`reelflow classify` runs as a user runs it, from a working directory of its own (the default
allowed root); the decode path gets mutated copies of a real video; a stack gets the same files
as jobs and still completes a good one afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.hostile_files import hostile_sources, mutated_copies
from support.stack_process import REELFLOW, UpProcess, run, stack_env

# what each refusal must say (a word or two of its one line)
EXPECTED = {
    "empty": "cannot read", "text": "cannot read", "truncated_mp4": "cannot read", "audio_only": "no video stream",
    "eight_k": "pixel limit", "hls_to_passwd": "HLS playlist", "ffconcat": "concat list",
    "concat_url": "FFmpeg protocol 'concat'", "dotdot_escape": "cannot read", "etc_passwd": "cannot read",
    "cloud_metadata": "metadata", "file_url": "scheme 'file'", "gopher_url": "scheme 'gopher'",
    "subfile_url": "FFmpeg protocol 'subfile'",
}


@pytest.fixture(scope="module")
def good_video(video_dir) -> Path:
    from pipelines.synthetic import make_video

    path = video_dir / "good_4s.mp4"
    if not path.exists():
        make_video(path, seconds=4.0, fps=30, size=(320, 240), noise=True)
    return path


@pytest.fixture(scope="module")
def cases(tmp_path_factory, good_video) -> list[tuple[str, str]]:
    return hostile_sources(tmp_path_factory.mktemp("hostile"), good_video)


def classify(source: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([REELFLOW, "classify", source, "--weights", "none", "--json"], cwd=cwd,
                            capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_classify_refuses_each_hostile_source_in_one_line(cases, tmp_path):
    assert set(EXPECTED) == {name for name, _ in cases}
    for name, source in cases:
        result, seconds = classify(source, tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1, (name, result.stderr)
        assert len(lines) == 1 and lines[0].startswith("reelflow: error: "), (name, result.stderr)
        assert EXPECTED[name] in lines[0], (name, lines[0])
        assert result.stdout == "", (name, result.stdout)
        assert seconds < 60


def test_jobs_outside_the_working_directory_are_refused_by_default(tmp_path, good_video):
    # classify allows the file it is given; a stack does not: that is what the roots are for
    from pipelines.errors import SourceNotAllowed
    from pipelines.sources import SourcePolicy

    policy = SourcePolicy(allowed_roots=(tmp_path,))
    for source in ("/etc/passwd", f"{tmp_path}/../../../../../etc/passwd", str(good_video)):
        with pytest.raises(SourceNotAllowed, match="outside the allowed roots"):
            policy.check(source)
    link = tmp_path / "innocent.mp4"
    link.symlink_to("/etc/passwd")
    with pytest.raises(SourceNotAllowed, match="outside the allowed roots"):
        policy.check(str(link))


DECODE_LOOP = """
import sys, json
from pipelines.errors import ReelflowError
from pipelines.sampler import sample_clips
from pipelines.sources import SourcePolicy, open_checked
policy = SourcePolicy()
outcomes = {}
for path in sys.argv[1:]:
    try:
        source, options, total = open_checked(path, policy, 1.6, None)
        clips = sum(1 for _ in sample_clips(source, 1.6, 4, open_options=options, limits=policy))
        outcomes[path] = f"ok {clips}/{total}"
    except ReelflowError as e:
        assert "\\n" not in str(e), str(e)
        outcomes[path] = "refused"
print(json.dumps(outcomes))
"""


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_mutated_copies_of_a_real_video_never_crash_or_hang_the_decoder(tmp_path, shared_videos):
    real = shared_videos / "mm_demo.mp4"
    copies = mutated_copies(real, tmp_path / "fuzz", count=30)
    # one process for the lot: a crash in FFmpeg would kill it, and the test sees the signal
    result = subprocess.run([sys.executable, "-c", DECODE_LOOP, *map(str, copies)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outcomes = json.loads(result.stdout)
    assert len(outcomes) == 30
    assert any(o.startswith("ok") for o in outcomes.values()), outcomes  # damage is mostly survivable
    # and the command itself, on a few of them
    for path in copies[:6]:
        done, seconds = classify(str(path), tmp_path)
        assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "decoder died" not in done.stderr
        if done.returncode == 1:
            errors = [line for line in done.stderr.splitlines() if not line.startswith("reelflow: warning:")]
            assert len(errors) == 1 and errors[0].startswith("reelflow: error: "), done.stderr


def test_a_crashed_decoder_is_one_line_and_exit_status_1(tmp_path, good_video):
    """What a segfault in FFmpeg looks like to the user, made with a real SIGSEGV to the working process."""
    import os
    import signal

    long_video = tmp_path / "long.mp4"
    from pipelines.synthetic import make_video

    make_video(long_video, seconds=60.0, fps=30, size=(320, 240))
    proc = subprocess.Popen([REELFLOW, "classify", str(long_video), "--weights", "none", "--json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline()  # the child is decoding
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGSEGV)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("reelflow: error: the decoder died (SIGSEGV)")
    assert "Traceback" not in err


@pytest.mark.slow  # about a minute or more: `make test-slow`
def test_a_stack_ends_every_hostile_job_done_or_failed_and_still_serves(tmp_path, cases, good_video):
    from services.settings import settings_for
    from services.store.connection import connect

    home = tmp_path / "home"
    env = stack_env(home)
    up = UpProcess(home, env, "--weights", "none")
    try:
        queue = connect(settings_for(str(home)))
        # straight into Redis, as any client could: the worker must sort them all out
        ids = []
        for _, source in cases:
            entry = queue.r.xadd("reelflow:jobs", {"source": source, "weights": "none"})
            ids.append(entry.decode())
        good = json.loads(run(env, "submit", good_video, "--weights", "none", "--json").stdout)["job_id"]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            records = queue.records(ids + [good])
            if all(r is not None and r.state.terminal for r in records.values()):
                break
            time.sleep(0.5)
        states = {source: records[i].state.value if records[i] else None for (_, source), i in zip(cases, ids)}
        assert set(states.values()) <= {"failed", "done"}, states
        assert records[good].state.value == "done" and records[good].segments_done == records[good].segments_total
        for (name, _), job_id in zip(cases, ids):
            if records[job_id].state.value == "failed":
                assert "\n" not in records[job_id].error and "Traceback" not in records[job_id].error, name
        letters = {d["job_id"]: d for d in queue.dead_letters()}
        assert all(letters[i]["error"] for i in ids if records[i].state.value == "failed")
    finally:
        up.stop()
