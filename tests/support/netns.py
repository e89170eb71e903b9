"""A network partition made real: a network namespace joined to this one by a veth pair, whose
link can be cut and healed. A process run in the namespace reaches this side at `host_ip`; cutting
the link drops its packets silently (no reset, no refusal), as a failed switch or a cloud network
partition does. Needs root and iproute2 (`ip netns`); `available()` says why not, for a clean skip.

    with Partition() as net:
        subprocess.Popen([*net.inside, "reelflow", "up"], ...)   # runs in the namespace
        net.cut(); ...; net.heal()
"""

from __future__ import annotations

import os
import shutil
import subprocess


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def available() -> str | None:
    """None when partitions can be made here; else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces): run the tests as root"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip` (apt-get install iproute2)"
    probe = f"rfprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot make a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Partition:
    def __init__(self, subnet: int | None = None):
        n = subnet if subnet is not None else os.getpid() % 250 + 1
        self.ns = f"rfpart{os.getpid()}"
        self.host_if, self.ns_if = f"rfh{os.getpid()}"[:15], f"rfn{os.getpid()}"[:15]
        self.host_ip, self.ns_ip = f"10.213.{n}.1", f"10.213.{n}.2"
        self.inside = ["ip", "netns", "exec", self.ns]  # a command prefix: run it in the namespace

    def __enter__(self) -> Partition:
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.ns)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
            _ip("-n", self.ns, "link", "set", self.ns_if, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def cut(self) -> None:
        """Drop every packet between the namespace and this side, silently, until `heal`."""
        _ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
