"""The replica's batch-size measurement, kept per machine (services/ray_backend/batch_rates.py)."""

import json
import time

import pytest
import torch

from pipelines.inference import ClipModel
from services.ray_backend.batch_rates import MAX_AGE_S, batch_rates, cpu_name, machine_key


@pytest.fixture(scope="module")
def clip_model():
    return ClipModel.load("x3d_xs", "none")


def test_the_first_replica_measures_and_the_next_reads_the_kept_rates(clip_model, tmp_path):
    path = tmp_path / "batch-rates.json"
    measured = batch_rates(clip_model, [1, 2], path)
    assert set(measured) <= {1, 2} and 1 in measured and all(r > 0 for r in measured.values())
    kept = json.loads(path.read_text())
    assert len(kept) == 1 and machine_key(clip_model) in next(iter(kept))

    started = time.perf_counter()
    again = batch_rates(clip_model, [1, 2], path)
    assert time.perf_counter() - started < 0.2, "the kept rates were measured again"
    assert again == {b: round(r, 3) for b, r in measured.items()}


def test_other_threads_sizes_or_old_entries_are_measured_again(clip_model, tmp_path):
    path = tmp_path / "batch-rates.json"
    batch_rates(clip_model, [1], path)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        batch_rates(clip_model, [1], path)  # one thread: another key
    finally:
        torch.set_num_threads(threads)
    batch_rates(clip_model, [1, 2], path)  # other sizes: another key
    kept = json.loads(path.read_text())
    assert len(kept) == 3

    key = next(k for k in kept if f"threads={threads}|" in k and k.endswith("sizes=1"))
    kept[key] = {"rates": {"1": 123456.0}, "at": time.time() - MAX_AGE_S - 1}  # stale, and impossible
    path.write_text(json.dumps(kept))
    assert batch_rates(clip_model, [1], path)[1] < 123456.0


def test_a_cache_that_cannot_be_written_or_read_only_costs_the_measurement(clip_model, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert 1 in batch_rates(clip_model, [1], blocked / "batch-rates.json")
    garbled = tmp_path / "batch-rates.json"
    garbled.write_text("{not json")
    assert 1 in batch_rates(clip_model, [1], garbled)
    assert machine_key(clip_model) in garbled.read_text()  # replaced by a good file


def test_the_cpu_is_named_with_its_widest_vector_instructions():
    # a hypervisor shows "AMD EPYC" for hosts with and without AVX-512, where OpenVINO's rates differ 2x:
    # rates timed on one must not be read on the other
    flags = "fpu vme sse4_2 avx f16c fma avx2"
    epyc = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {}\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: {}\n"
    assert cpu_name(epyc.format(flags, flags)) == "AMD EPYC (AVX2)"
    wider = flags + " avx512f avx512bw avx512_vnni"
    assert cpu_name(epyc.format(wider, wider)) == "AMD EPYC (AVX-512)"
    assert cpu_name("processor\t: 0\nFeatures\t: fp asimd evtstrm\nmodel name\t: Neoverse-N1\n") == "Neoverse-N1 (NEON)"
    assert cpu_name("model name\t: Old CPU\nflags\t\t: fpu sse2\n") == "Old CPU"
