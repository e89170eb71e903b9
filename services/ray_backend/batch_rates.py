"""The batch size a model replica runs at, measured once per machine and kept.

`REELFLOW_BATCH_SIZE=auto` lets each replica pick the fastest batch size of its model on its
machine. Timing it takes seconds of the machine's cores (5 s for x3d_xs on a 2-core VM), which a
second replica started by the autoscaler would take from the busy first one — and timings taken
beside a busy replica are wrong. So the first replica on a machine measures and writes the rates to
`$XDG_CACHE_HOME/reelflow/batch-rates.json` (default `~/.cache/reelflow`); later replicas of the
same model, threads, precision and device on the same CPU and torch read them. Entries older than
`MAX_AGE_S` are measured again; delete the file to measure now.

    >>> rates = batch_rates(clip_model, sizes=[1, 2, 4, 8, 16])       # doctest: +SKIP
    {1: 19.8, 2: 19.4, 4: 18.9}
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

log = logging.getLogger("reelflow.replica")

MAX_AGE_S = 7 * 24 * 3600
FILE_NAME = "batch-rates.json"


VECTOR_ISAS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sve", "SVE"), ("asimd", "NEON"))


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "reelflow" / FILE_NAME


def machine_key(clip_model) -> str:
    """What the rates depend on: the model's shape, the device, runtime and precision, torch's threads
    and version, and the CPU."""
    import torch  # loaded by the replica already, after it set OMP_WAIT_POLICY (services/ray_backend/replica.py)

    spec = clip_model.spec
    device = clip_model.device
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return (f"{spec.name}|{spec.num_frames}x{spec.crop_size}|classes={clip_model.num_classes}|{device.type}"
            f"|runtime={clip_model.runtime}|streams={clip_model.streams}"
            f"|{clip_model.precision}|threads={torch.get_num_threads()}|torch={torch.__version__}"
            f"|{where}|cores={os.cpu_count()}")


def batch_rates(clip_model, sizes: list[int], path: Path | None = None) -> dict[int, float]:
    """Clips per second by batch size: kept from an earlier replica on this machine, else measured
    (and kept). A cache that cannot be read or written only costs the measurement."""
    path = path or cache_path()
    key = f"{machine_key(clip_model)}|sizes={','.join(map(str, sizes))}"
    entry = _read(path).get(key)
    if entry and time.time() - entry.get("at", 0) < MAX_AGE_S:
        log.info("%s: batch rates as measured %s ago on this machine (%s)", clip_model.spec.name,
                 _age(time.time() - entry["at"]), path)
        return {int(b): r for b, r in entry["rates"].items()}
    rates = clip_model.batch_rates(sizes)
    entries = _read(path)  # another replica may have written meanwhile
    entries[key] = {"rates": {str(b): round(r, 3) for b, r in rates.items()}, "at": time.time()}
    _write(path, entries)
    return rates


def cpu_name(cpuinfo: str | None = None) -> str:
    """The CPU's model name and its widest vector instructions (Linux: /proc/cpuinfo, or `cpuinfo`'s
    text), e.g. "AMD EPYC (AVX2)": a hypervisor may show one name for hosts whose model rates differ
    by 2x (OpenVINO on AVX-512 against AVX2)."""
    name, flags = "", set()
    try:
        for line in (cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()).splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    isa = next((label for flag, label in VECTOR_ISAS if flag in flags), None)
    return f"{name} ({isa})" if isa else name


def _read(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, entries: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".batch-rates-", delete=False) as f:
            json.dump(entries, f, indent=1, sort_keys=True)
        os.replace(f.name, path)  # whole or not at all, for replicas reading at the same time
    except OSError as e:
        log.warning("cannot keep the batch rates in %s (%s); each replica will measure them", path, e)


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
