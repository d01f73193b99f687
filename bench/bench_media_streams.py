"""Benchmark: concurrent prompt streams one core sustains with frames sent on time.

Each stream is a real RtpSession (UDP on 127.0.0.1, RTCP port too) playing the English prompt
set through a Player driven by the one shared MediaClock on the real epoll reactor. Every
packet's send lateness (time after the ideal 20 ms grid point of its tick) is recorded. A
separate sink process on the other core receives and counts the packets.

    .venv/bin/python bench/bench_media_streams.py                  # sweep 250..2000 streams
    .venv/bin/python bench/bench_media_streams.py --streams 1000 --seconds 20

Target: >= 1,000 streams with p99 lateness < 5 ms. The sender is pinned to CPU 0 and the sink
to CPU 1 when the machine has two; other load on the machine shows up in the figures.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def pin(cpu: int) -> None:
    if not os.environ.get("BENCH_PIN"):
        return
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > cpu:
        os.sched_setaffinity(0, {cpu})


def sink(port_file: str, seconds: float) -> None:
    """Receive and count datagrams until ``seconds`` of silence after the first."""
    pin(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(s.getsockname()[1]))
    buf = bytearray(2048)
    count = 0
    s.settimeout(300)  # the worker may take a while to bind thousands of ports
    try:
        while True:
            s.recv_into(buf)
            count += 1
            s.settimeout(seconds)
    except TimeoutError:
        pass
    print(json.dumps({"received": count}), flush=True)


def open_streams(reactor, media, streams: int, sink_port: int, record, first_port: int = 30000):
    """Open ``streams`` timed RTP sessions to the sink; return them and a function playing them.

    Each packet's send lateness (seconds after the ideal grid point of its media clock tick)
    goes to ``record``. Also used by bench_rate_deck.py (streams running during a reload).
    """
    from cbserver.media.player import Player
    from cbserver.media.ports import PortPool
    from cbserver.media.prompts import load_prompt_library
    from cbserver.media.session import RtpSession

    library = load_prompt_library("en")
    names = sorted(library.names())
    pool = PortPool(first_port, first_port + 2 * streams + 100)
    wall = time.time

    class TimedSession(RtpSession):
        """An RTP session that passes each packet's send lateness after its clock tick to ``record``."""

        def _write(self, data):
            super()._write(data)
            record(wall() - media.tick_due)

    sessions = []
    for i in range(streams):
        s = TimedSession(reactor, reactor, pool, "127.0.0.1", call_id=f"b{i}", rtcp_interval=5.0)
        s.open()
        s.configure(("127.0.0.1", sink_port), 0, "PCMU")
        sessions.append(s)
    seq = names * 20  # far longer than the run

    def play():
        for s in sessions:
            Player(media, s, library, seq).play()

    return sessions, play


def start_sink():
    """Start the sink process; return (process, its UDP port, the port file to remove)."""
    port_file = Path(f"/tmp/bench_media_sink_{os.getpid()}")
    port_file.unlink(missing_ok=True)
    sk = subprocess.Popen([PY, __file__, "--sink", str(port_file)], stdout=subprocess.PIPE)
    while not port_file.exists() or not port_file.read_text():
        time.sleep(0.05)
    return sk, int(port_file.read_text()), port_file


def worker(streams: int, seconds: float, sink_port: int, phases: int) -> None:
    """Run ``streams`` players for ``seconds`` and print the figures as JSON."""
    pin(0)
    sys.path.insert(0, str(ROOT))
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    from cbserver.media.clock import MediaClock

    media = MediaClock(reactor, phases=phases)
    lateness: list[float] = []
    sessions, play = open_streams(reactor, media, streams, sink_port, lateness.append)
    warmup = 1.0

    def start():
        play()
        if os.environ.get("BENCH_GC_FREEZE"):
            import gc

            gc.freeze()  # long-lived setup out of the collector's way, as a server may do
        reactor.callLater(warmup, lateness.clear)
        reactor.callLater(warmup, measure_start)
        reactor.callLater(warmup + seconds, finish)

    marks = {}

    def runq():  # seconds spent runnable but waiting for a CPU (contention from others)
        return sum(int((t / "schedstat").read_text().split()[1]) / 1e9
                   for t in Path("/proc/self/task").iterdir())

    def measure_start():
        marks["wait0"] = runq()
        marks["t0"], marks["cpu0"] = time.perf_counter(), time.process_time()
        marks["ticks0"], marks["skip0"] = media.ticks_run, media.ticks_skipped
        marks["sent0"] = sum(s.packets_sent for s in sessions)

    def finish():
        t = time.perf_counter() - marks["t0"]
        cpu = time.process_time() - marks["cpu0"]
        waited = runq() - marks["wait0"]
        sent = sum(s.packets_sent for s in sessions) - marks["sent0"]
        errors = sum(s.send_errors for s in sessions)
        media.stop()
        lat = sorted(lateness)

        def q(p):
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

        print(json.dumps({
            "streams": streams, "seconds": round(t, 2), "frames": sent,
            "expected": streams * round(seconds / 0.02), "send_errors": errors,
            "ticks": media.ticks_run - marks["ticks0"],
            "ticks_skipped": media.ticks_skipped - marks["skip0"],
            "p50_ms": round(q(0.50), 3), "p99_ms": round(q(0.99), 3), "max_ms": round(q(1.0), 3),
            "cpu_pct": round(100 * cpu / t, 1), "runq_wait_pct": round(100 * waited / t, 1),
            "cpu_us_per_frame": round(1e6 * cpu / max(1, sent), 2),
            "gc_max_ms": round(marks["gc"][0] * 1000, 1),
        }), flush=True)
        for s in sessions:
            s.close()
        reactor.callLater(0.2, reactor.stop)

    gc_pause = [0.0, 0.0]  # longest and total time spent in the cyclic garbage collector

    def gc_timer(phase, info):
        if phase == "start":
            gc_pause.append(time.perf_counter())
        elif len(gc_pause) > 2:
            took = time.perf_counter() - gc_pause.pop()
            gc_pause[0] = max(gc_pause[0], took)
            gc_pause[1] += took

    import gc

    gc.callbacks.append(gc_timer)
    marks["gc"] = gc_pause
    reactor.callWhenRunning(start)
    reactor.run()


def run_one(streams: int, seconds: float, phases: int) -> dict:
    sk, port, port_file = start_sink()
    out = subprocess.run(
        [PY, __file__, "--worker", str(streams), "--seconds", str(seconds), "--sink-port",
         str(port), "--phases", str(phases)], capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    received = json.loads(sk.communicate(timeout=60)[0].decode().strip().splitlines()[-1])
    port_file.unlink(missing_ok=True)
    result["sink_received_total"] = received["received"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, action="append")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--worker", type=int)
    ap.add_argument("--sink")
    ap.add_argument("--sink-port", type=int)
    ap.add_argument("--phases", type=int, default=4, help="media clock slots per 20 ms")
    args = ap.parse_args()
    if args.sink:
        sink(args.sink, 3.0)
        return
    if args.worker:
        worker(args.worker, args.seconds, args.sink_port, args.phases)
        return
    counts = args.streams or [250, 500, 1000, 1500, 2000]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"media clock phases: {args.phases}")
    header = (f"{'streams':>8} {'frames':>9} {'expected':>9} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'max ms':>7} {'skipped':>7} {'cpu %':>6} {'runq %':>6} {'us/frame':>8} "
              f"{'gc max':>6} {'sink rx*':>9}")
    print(header)
    for n in counts:
        r = run_one(n, args.seconds, args.phases)
        print(f"{r['streams']:>8} {r['frames']:>9} {r['expected']:>9} {r['p50_ms']:>7} "
              f"{r['p99_ms']:>7} {r['max_ms']:>7} {r['ticks_skipped']:>7} {r['cpu_pct']:>6} "
              f"{r['runq_wait_pct']:>6} {r['cpu_us_per_frame']:>8} {r['gc_max_ms']:>6} "
              f"{r['sink_received_total']:>9}", flush=True)
    print("* sink rx counts every packet the sink got, the warm-up second included")


if __name__ == "__main__":
    main()
