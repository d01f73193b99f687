"""Benchmark: relayed calls (legA <-> legB, both directions) that one process sustains.

For each call count the target relays ``calls`` calls of two G.711 streams each (50 packets/s
per direction, so 100 packets/s in and 100 out per call) for ``--seconds``. A load generator
(this process) sends every stream from one UDP socket on 127.0.0.1, carrying a stream number
and send time in the payload, and counts what comes back: loss, and relay latency.

Targets, run on the same load one after the other in the same run:

* ``cbserver``: a worker process with the real RtpSession/Relay on the epoll reactor
  (single-threaded, so one core at most), every RTP socket in one MediaMux;
* ``cbserver-ports`` (with ``--no-mux``): the same with a Twisted UDP port per RTP socket;
* ``rtpengine``: Debian's rtpengine in userspace mode (``--table=-1``, no kernel module) with
  ``--num-threads=1``, driven over its ng control protocol (offer/answer per call).

    .venv/bin/python bench/bench_media_relay.py                    # sweep 250..1000 calls
    .venv/bin/python bench/bench_media_relay.py --calls 500 --seconds 20 --no-baseline

CPU is read from /proc/<pid>/stat of the target over the measured window. The generator
shares the machine's two cores with the target (and with anything else running).
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HZ = os.sysconf("SC_CLK_TCK")
FRAME = 0.02
PAYLOAD = 160
_RTP = struct.Struct("!BBHII")
_STAMP = struct.Struct("!Id")


# --- cbserver worker -----------------------------------------------------------------------

def worker(calls: int, gen_port: int, use_mux: bool) -> None:
    """Set up ``calls`` relayed calls, print their leg ports, relay until SIGTERM."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    from cbserver.media.mux import MediaMux
    from cbserver.media.ports import PortPool
    from cbserver.media.relay import Relay
    from cbserver.media.session import RtpSession

    pool = PortPool(40000, 40000 + 4 * calls + 100)
    mux = MediaMux(reactor) if use_mux else None
    legs, relays = [], []
    for i in range(calls):
        a = RtpSession(reactor, reactor, pool, "127.0.0.1", call_id=f"r{i}", mux=mux)
        b = RtpSession(reactor, reactor, pool, "127.0.0.1", call_id=f"r{i}", mux=mux)
        for s in (a, b):
            s.open()
            s.configure(("127.0.0.1", gen_port), 0, "PCMU", 101)
        relay = Relay(reactor, a, b, inactivity_timeout=300.0, call_id=f"r{i}")
        relay.start()
        relays.append(relay)
        legs.append([a.local_port, b.local_port])
    print(json.dumps({"legs": legs}), flush=True)
    if os.environ.get("BENCH_GC_FREEZE"):
        import gc

        gc.freeze()
    if os.environ.get("BENCH_PROFILE"):  # developer aid: profile the worker, print on exit
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        reactor.addSystemEventTrigger("after", "shutdown", lambda: (
            prof.disable(), pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime")
            .print_stats(25)))
    reactor.run()


def start_cbserver(calls: int, gen_port: int, use_mux: bool = True):
    proc = subprocess.Popen(
        [PY, __file__, "--worker", str(calls), "--gen-port", str(gen_port)]
        + ([] if use_mux else ["--no-mux"]),
        stdout=subprocess.PIPE, text=True,
    )
    legs = json.loads(proc.stdout.readline())["legs"]
    return proc, legs


# --- rtpengine baseline --------------------------------------------------------------------

def bencode(v) -> bytes:
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(type(v))


def bdecode(data: bytes, i: int = 0):
    c = data[i:i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1:j]), j + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while data[i:i + 1] != b"e":
            v, i = bdecode(data, i)
            items.append(v)
        if c == b"l":
            return items, i + 1
        return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
    j = data.index(b":", i)
    n = int(data[i:j])
    return data[j + 1:j + 1 + n], j + 1 + n


def sdp(port: int) -> str:
    return ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


def ng(sock, ctl, cmd: dict) -> dict:
    cookie = b"%08x" % random.getrandbits(32)
    sock.sendto(cookie + b" " + bencode(cmd), ctl)
    while True:
        data = sock.recv(65535)
        if data.startswith(cookie + b" "):
            reply, _ = bdecode(data, len(cookie) + 1)
            if reply.get("result") not in (b"ok", b"pong"):
                raise RuntimeError(f"rtpengine {cmd['command']}: {reply}")
            return reply


def media_port(sdp_bytes: bytes) -> int:
    for line in sdp_bytes.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise RuntimeError("no m=audio in rtpengine's SDP")


def start_rtpengine(calls: int, gen_port: int):
    ctl = ("127.0.0.1", 22300 + random.randrange(500))
    proc = subprocess.Popen([
        shutil.which("rtpengine"), "--config-file=none", "--foreground", "--log-stderr",
        "--table=-1", "--interface=127.0.0.1", f"--listen-ng={ctl[0]}:{ctl[1]}",
        "--port-min=50000", "--port-max=59999", "--num-threads=1", "--log-level=3",
        "--timeout=300",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    for _ in range(50):  # wait until the control socket answers a ping
        try:
            ng(s, ctl, {"command": "ping"})
            break
        except OSError:
            time.sleep(0.1)
    s.settimeout(5)
    legs = []
    for i in range(calls):
        cid = f"bench-{i}"
        offer = ng(s, ctl, {"command": "offer", "call-id": cid, "from-tag": "a", "sdp": sdp(gen_port)})
        answer = ng(s, ctl, {"command": "answer", "call-id": cid, "from-tag": "a", "to-tag": "b",
                             "sdp": sdp(gen_port)})
        # A sends to the port rtpengine put in the answer; B to the one in the offer.
        legs.append([media_port(answer["sdp"]), media_port(offer["sdp"])])
    s.close()
    return proc, legs


# --- load generator ------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime


def runq_wait(pid: int) -> float:
    """Seconds the target spent runnable but waiting for a CPU (/proc/<pid>/schedstat)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        total += int((task / "schedstat").read_text().split()[1]) / 1e9
    return total


def generate(sock, legs, seconds: float, target_pid: int, subticks: int = 4) -> dict:
    """Send every stream at 50 packets/s for ``seconds``; count and time what comes back."""
    streams = [("127.0.0.1", port) for pair in legs for port in pair]
    n = len(streams)
    seq = [0] * n
    sent = 0
    received = 0
    per_stream = [0] * n
    latencies: list[float] = []
    buf = bytearray(2048)
    pad = b"\xff" * (PAYLOAD - _STAMP.size)
    clock = time.perf_counter

    def drain():
        nonlocal received
        while True:
            try:
                size = sock.recv_into(buf)
            except BlockingIOError:
                return
            if size >= 12 + _STAMP.size:
                sid, t = _STAMP.unpack_from(buf, 12)
                if sid < n:
                    per_stream[sid] += 1
                    received += 1
                    latencies.append(clock() - t)

    warm_until = clock() + 1.0
    start = clock()
    cpu0 = None
    tick = 0
    end = start + 1.0 + seconds
    chunk = (n + subticks - 1) // subticks
    while True:
        now = clock()
        if now >= end:
            break
        if cpu0 is None and now >= warm_until:
            cpu0, t0, sent0, received0 = cpu_seconds(target_pid), now, sent, received
            gen_cpu0 = time.process_time()
            wait0 = runq_wait(target_pid)
            latencies.clear()
        part = tick % subticks
        for sid in range(part * chunk, min(n, (part + 1) * chunk)):
            s = seq[sid]
            pkt = (_RTP.pack(0x80, 0, s & 0xFFFF, (s * 160) & 0xFFFFFFFF, sid + 1)
                   + _STAMP.pack(sid, clock()) + pad)
            try:
                sock.sendto(pkt, streams[sid])
                sent += 1
            except BlockingIOError:
                pass
            seq[sid] = s + 1
        drain()
        tick += 1
        due = start + tick * FRAME / subticks
        while True:
            wait = due - clock()
            if wait <= 0:
                break
            select.select([sock], [], [], wait)
            drain()
    t1, cpu1, received1 = clock(), cpu_seconds(target_pid), received
    gen_cpu = time.process_time() - gen_cpu0
    waited = runq_wait(target_pid) - wait0
    sent_window = sent - sent0
    settle = clock() + 1.0
    while clock() < settle:
        select.select([sock], [], [], 0.05)
        drain()
    lost = sent - received
    lat = sorted(latencies)

    def q(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {
        "calls": len(legs), "pps_in": round(sent_window / (t1 - t0)), "sent": sent,
        "received": received, "loss_pct": round(100.0 * lost / max(1, sent), 4),
        "streams_silent": sum(1 for c in per_stream if c == 0),
        "lat_p50_ms": round(q(0.5), 3), "lat_p99_ms": round(q(0.99), 3),
        "target_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        # CPU per packet actually relayed (in the window), in microseconds
        "cpu_us_per_pkt": round(1e6 * (cpu1 - cpu0) / max(1, received1 - received0), 2),
        "received_in_window": received1 - received0,
        "generator_cpu_pct": round(100 * gen_cpu / (t1 - t0), 1),
        "target_runq_wait_pct": round(100 * waited / (t1 - t0), 1),
    }


def run(target: str, calls: int, seconds: float) -> dict:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:  # SO_RCVBUFFORCE/SO_SNDBUFFORCE (33/32 on Linux): root may exceed rmem_max
        sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
        sock.setsockopt(socket.SOL_SOCKET, 32, 32 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    gen_port = sock.getsockname()[1]
    if target == "rtpengine":
        proc, legs = start_rtpengine(calls, gen_port)
    else:
        proc, legs = start_cbserver(calls, gen_port, use_mux=target == "cbserver")
    try:
        result = generate(sock, legs, seconds, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.close()
    result["target"] = target
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, action="append")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--worker", type=int)
    ap.add_argument("--gen-port", type=int)
    ap.add_argument("--no-mux", action="store_true",
                    help="also run cbserver with a Twisted port per RTP socket (cbserver-ports)")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.gen_port, use_mux=not args.no_mux)
        return
    targets = ["cbserver"] + (["cbserver-ports"] if args.no_mux else [])
    if args.no_baseline:
        pass
    elif shutil.which("rtpengine"):
        targets.append("rtpengine")
    else:
        print("baseline skipped: rtpengine not installed (apt-get install rtpengine-daemon)")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'target':>14} {'calls':>6} {'pps in':>7} {'sent':>8} {'recv':>8} {'loss %':>8} "
          f"{'lat p50':>8} {'lat p99':>8} {'cpu %':>6} {'gen cpu %':>9} {'runq %':>6} {'us/pkt':>6}")
    results = {}
    for calls in args.calls or [250, 500, 750, 1000]:
        for target in targets:
            r = run(target, calls, args.seconds)
            results[(target, calls)] = r
            print(f"{r['target']:>14} {r['calls']:>6} {r['pps_in']:>7} {r['sent']:>8} "
                  f"{r['received']:>8} {r['loss_pct']:>8} {r['lat_p50_ms']:>8} "
                  f"{r['lat_p99_ms']:>8} {r['target_cpu_pct']:>6} {r['generator_cpu_pct']:>9} "
                  f"{r['target_runq_wait_pct']:>6} {r['cpu_us_per_pkt']:>6}",
                  flush=True)
        if "rtpengine" in targets:
            ours, theirs = results[("cbserver", calls)], results[("rtpengine", calls)]
            print(f"{'':>14} {calls:>6} CPU per relayed packet: cbserver "
                  f"{ours['cpu_us_per_pkt']} us, rtpengine {theirs['cpu_us_per_pkt']} us, "
                  f"ratio {ours['cpu_us_per_pkt'] / max(0.01, theirs['cpu_us_per_pkt']):.1f}x",
                  flush=True)


if __name__ == "__main__":
    main()
