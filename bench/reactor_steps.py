"""How long each turn of the epoll reactor keeps it busy (a benchmark probe, not the server).

A request that arrives while the reactor is busy waits in the kernel's socket buffer until
the turn ends; its answer is written in a later turn. So a refusal's latency is set by the
length of the turns around it. This probe times every turn from the moment ``epoll_wait``
returns to the moment the reactor calls it again (the timers and ``runUntilCurrent`` included),
with how many events the turn handled, how much of it was garbage collection and how much the
timed calls (``runUntilCurrent``), and names the timed calls that ran over 2 ms. Every 5 s
and at exit it writes a summary to ``path``.

Used through ``bench/stepprobe/sitecustomize.py``: run the benchmark with
``PYTHONPATH=bench/stepprobe CBS_REACTOR_STEPS=/tmp/steps.txt``; the server inherits both.
"""

from __future__ import annotations

import atexit
import gc
import threading
import time

_BOUNDS_MS = (2, 5, 10, 20, 30, 50, 100)


class StepProbe:
    """Collects the turns' lengths (see the module docstring)."""

    def __init__(self, path: str):
        self.path = path
        self.steps: list[tuple[float, int, float, float]] = []  # (busy, events, gc, timed)
        self.returned = 0.0
        self.cpu_at_return = 0.0
        self.events = 0
        self.gc_in_step = 0.0
        self.timed = 0.0
        self._gc_start = 0.0
        self.by_generation: dict[int, list[float]] = {}  # generation -> [count, total, max]
        self.last_write = time.monotonic()
        self.slow_calls: dict[str, list[float]] = {}  # timed call's name -> [count, total, max]
        self.in_long: dict[str, list[float]] = {}  # in turns over 20 ms: handler -> [count, total]
        self.turn_events: list[tuple[str, float]] = []  # this turn's handlers and their times

    def on_gc(self, phase, info) -> None:
        """``gc.callbacks`` hook: add each collection to the turn it ran in."""
        if threading.current_thread() is not threading.main_thread():
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_start
            self.gc_in_step += took
            entry = self.by_generation.setdefault(info["generation"], [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += took
            entry[2] = max(entry[2], took)

    def before_poll(self) -> None:
        """The reactor calls epoll again: the busy part of the turn ends."""
        if self.returned:
            busy = time.perf_counter() - self.returned
            self.steps.append((busy, self.events, self.gc_in_step, self.timed))
            if busy > 0.020:
                # CPU the reactor thread used in the turn: the rest of a long turn is time
                # the process waited for a core (the machine is shared).
                cpu = time.thread_time() - self.cpu_at_return
                for name, took in self.turn_events + [("(timed calls)", self.timed),
                                                      ("(of which gc)", self.gc_in_step),
                                                      ("(all, on CPU)", cpu),
                                                      ("(all, wall)", busy)]:
                    entry = self.in_long.setdefault(name, [0, 0.0])
                    entry[0] += 1
                    entry[1] += took
        self.turn_events = []
        now = time.monotonic()
        if now - self.last_write > 5:
            self.last_write = now
            self.write()

    def after_poll(self, events: int) -> None:
        """``epoll_wait`` returned ``events`` ready descriptors: a busy turn starts."""
        self.returned = time.perf_counter()
        self.cpu_at_return = time.thread_time()
        self.events = events
        self.gc_in_step = 0.0
        self.timed = 0.0

    def write(self) -> None:
        """The summary: turns by length, and what the long ones held."""
        steps = list(self.steps)
        if not steps:
            return
        busy = sorted(s[0] for s in steps)
        lines = [f"turns {len(steps)}, busy {sum(busy):.1f} s, p50 {1000 * busy[len(busy) // 2]:.2f} ms, "
                 f"p99 {1000 * busy[int(len(busy) * 0.99)]:.1f} ms, p99.9 "
                 f"{1000 * busy[int(len(busy) * 0.999)]:.1f} ms, max {1000 * busy[-1]:.1f} ms"]
        for bound in _BOUNDS_MS:
            long = [s for s in steps if s[0] * 1000 > bound]
            if not long:
                continue
            n, total = len(long), sum(s[0] for s in long)
            lines.append(f"  > {bound:3d} ms: {n:6d} turns ({total:6.2f} s busy), "
                         f"events mean {sum(s[1] for s in long) / n:5.1f}, gc share "
                         f"{100 * sum(s[2] for s in long) / total:4.1f} %, "
                         f"timed calls share {100 * sum(s[3] for s in long) / total:4.1f} %")
        worst = sorted(steps, reverse=True)[:15]
        lines.append("  longest (ms busy / events / gc ms / timed ms): " + ", ".join(
            f"{1000 * b:.1f}/{e}/{1000 * g:.1f}/{1000 * t:.1f}" for b, e, g, t in worst))
        slow = sorted(self.slow_calls.items(), key=lambda kv: -kv[1][1])[:12]
        lines.append("  timed calls over 2 ms (name: count, total s, max ms): " + "; ".join(
            f"{name}: {int(c)}, {t:.2f}, {1000 * m:.1f}" for name, (c, t, m) in slow))
        lines.append("  collections (generation: count, mean ms, max ms): " + "; ".join(
            f"{g}: {int(c)}, {1000 * t / c:.1f}, {1000 * m:.1f}"
            for g, (c, t, m) in sorted(self.by_generation.items())))
        held = sorted(self.in_long.items(), key=lambda kv: -kv[1][1])[:12]
        lines.append("  what the turns over 20 ms held (handler: count, total s): " + "; ".join(
            f"{name}: {int(c)}, {t:.2f}" for name, (c, t) in held))
        with open(self.path, "w") as out:
            out.write("\n".join(lines) + "\n")


class _Poller:
    """Wraps the reactor's ``epoll`` object to time the turns between two waits."""

    def __init__(self, real, probe: StepProbe):
        self._real = real
        self._probe = probe

    def poll(self, *args, **kwargs):
        """``epoll.poll``, timed."""
        self._probe.before_poll()
        result = self._real.poll(*args, **kwargs)
        self._probe.after_poll(len(result))
        return result

    def __getattr__(self, name):
        return getattr(self._real, name)


def install(path: str) -> StepProbe:
    """Patch the epoll reactor (before it is built) to time its turns into ``path``."""
    from twisted.internet import base, epollreactor

    probe = StepProbe(path)
    gc.callbacks.append(probe.on_gc)
    init = epollreactor.EPollReactor.__init__

    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._poller = _Poller(self._poller, probe)

    epollreactor.EPollReactor.__init__ = patched_init
    run = base.ReactorBase.runUntilCurrent

    def timed_run(self):
        t = time.perf_counter()
        try:
            return run(self)
        finally:
            probe.timed += time.perf_counter() - t

    base.ReactorBase.runUntilCurrent = timed_run
    call_later = base.ReactorBase.callLater

    def timed_call_later(self, delay, f, *args, **kwargs):
        name = getattr(f, "__qualname__", None) or type(f).__name__

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return f(*a, **kw)
            finally:
                took = time.perf_counter() - t
                if took > 0.002:
                    entry = probe.slow_calls.setdefault(name, [0, 0.0, 0.0])
                    entry[0] += 1
                    entry[1] += took
                    entry[2] = max(entry[2], took)

        return call_later(self, delay, timed, *args, **kwargs)

    base.ReactorBase.callLater = timed_call_later
    handle = epollreactor.EPollReactor._doReadOrWrite

    def timed_handle(self, selectable, fd, event):
        t = time.perf_counter()
        try:
            return handle(self, selectable, fd, event)
        finally:
            proto = getattr(selectable, "protocol", None)
            while hasattr(proto, "wrappedProtocol"):
                proto = proto.wrappedProtocol
            name = type(proto if proto is not None else selectable).__name__
            probe.turn_events.append((f"{name}/{'r' if event & 1 else 'w'}",
                                      time.perf_counter() - t))

    epollreactor.EPollReactor._doReadOrWrite = timed_handle
    atexit.register(probe.write)
    return probe
