"""Where a model's forward pass runs: `torch` (PyTorch eager, every device) or `openvino` (a CPU's
fast runtime: 1.7-4.4x PyTorch eager's rate on this project's machines, with torch's numbers within
the parity check's tolerances; benchmarks/runtimes.md).

`auto` picks OpenVINO on a CPU when it is installed (`pip install reelflow[openvino]`) and torch on
CUDA. A model is converted once per (model, weights, runtime version, input shape) and kept in a
cache directory; a conversion whose outputs differ from torch's (or that fails) makes that model run
on torch, with a one-line note, unless the runtime was asked for by name (then it is an error).

    >>> resolve("torch", "cpu")
    'torch'
"""

from __future__ import annotations

import importlib.util

from pipelines.errors import ReelflowError

RUNTIMES = ("torch", "openvino")
CHOICES = ("auto", *RUNTIMES)


class RuntimeUnavailable(ReelflowError):
    """A runtime asked for by name that cannot run here (not installed, not for this device)."""


def installed(runtime: str) -> bool:
    if runtime == "torch":
        return True
    return importlib.util.find_spec(runtime) is not None


def resolve(requested: str, device: str) -> str:
    """The runtime `requested` means on `device` (`auto`: the fastest installed one). An explicit
    runtime that cannot run here is a one-line error naming the fix."""
    if requested not in CHOICES:
        raise RuntimeUnavailable(f"unknown runtime {requested!r}; choose one of {', '.join(CHOICES)}")
    cuda = device.startswith("cuda")
    if requested == "auto":
        return "openvino" if not cuda and installed("openvino") else "torch"
    if requested == "openvino":
        if cuda:
            raise RuntimeUnavailable("--runtime openvino runs on CPUs only; use --runtime torch (or auto) "
                                     "with --device cuda")
        if not installed("openvino"):
            raise RuntimeUnavailable("--runtime openvino: OpenVINO is not installed; "
                                     "pip install 'reelflow[openvino]' (or use --runtime torch)")
    return requested
