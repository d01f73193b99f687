"""A throw-away network namespace with only a loopback holding 192.0.2.0/24.

The RFC 4475 messages name documentation hosts in their Via headers; running both ends in a
namespace of our own means no packet the server sends can leave the machine, whatever it
does with those addresses.
"""

import os
import shutil
import subprocess

NET = "192.0.2.0/24"
CLIENT_ADDR = "192.0.2.1"
SERVER_ADDR = "192.0.2.10"


class NetnsUnavailable(Exception):
    """Namespaces cannot be made here (not root, no ``ip``, or the kernel refuses)."""


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


class Namespace:
    """``ip netns add`` on enter, ``ip netns del`` on exit; ``prefix()`` runs inside it."""

    def __init__(self, name: str | None = None):
        self.name = name or f"cbs-torture-{os.getpid()}"

    def __enter__(self) -> "Namespace":
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root")
        if shutil.which("ip") is None:
            raise NetnsUnavailable("the 'ip' command (iproute2) is not installed")
        made = _ip("netns", "add", self.name)
        if made.returncode != 0:
            raise NetnsUnavailable(f"ip netns add failed: {made.stderr.strip()}")
        try:
            for args in (
                ("-n", self.name, "link", "set", "lo", "up"),
                # On loopback the whole prefix becomes local: nothing routes anywhere else,
                # and the namespace has no other interface at all.
                ("-n", self.name, "addr", "add", f"{CLIENT_ADDR}/24", "dev", "lo"),
            ):
                done = _ip(*args)
                if done.returncode != 0:
                    raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")
            links = _ip("-n", self.name, "-o", "link", "show").stdout.splitlines()
            if len(links) != 1 or ": lo:" not in links[0]:
                raise NetnsUnavailable(f"namespace has unexpected links: {links}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        _ip("netns", "del", self.name)

    def prefix(self) -> list[str]:
        """Command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]
