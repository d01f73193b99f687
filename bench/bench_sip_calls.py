"""Calls placed and torn down per second by the UA over UDP to a sipp UAS on loopback.

The UA runs in this process, pinned to one core; sipp (built-in ``uas`` scenario: 180, 200,
ACK, BYE, 200) runs on another core when there is one. Every call is INVITE -> 180 -> 200 ->
ACK -> BYE -> 200; we hang up as soon as the call is answered and start the next one, keeping
``--concurrency`` calls in flight. Prints the figures; a run with any failed call says so.

    .venv/bin/python bench/bench_sip_calls.py --calls 20000 --concurrency 200
"""

import argparse
import gc
import os
import resource
import shutil
import socket
import subprocess
import sys
import time

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor  # noqa: E402
from twisted.logger import globalLogBeginner, textFileLogObserver  # noqa: E402
from zope.interface import implementer  # noqa: E402

from cbserver.sip.service import SipService  # noqa: E402
from cbserver.sip.ua import ICallListener, UAConfig  # noqa: E402
from cbserver.tap import GC_THRESHOLDS  # noqa: E402

OFFER = (
    b"v=0\r\no=cb 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@implementer(ICallListener)
class Driver:
    """Keeps ``concurrency`` calls in flight until ``total`` have finished."""

    def __init__(self, ua, total, concurrency):
        self.ua, self.total, self.concurrency = ua, total, concurrency
        self.started = self.answered = self.ended = 0
        self.failed = []
        self.t0 = self.t1 = None

    def start(self):
        """Place the first ``concurrency`` calls."""
        self.t0 = time.perf_counter()
        for _ in range(min(self.concurrency, self.total)):
            self._place()

    def _place(self):
        self.started += 1
        self.ua.place_call(
            f"1555{self.started:07d}", caller_id="cb1818", display_name=None,
            sdp_offer=OFFER, no_answer_timeout=30, listener=self,
        )  # fmt: skip

    def _finished(self):
        done = self.ended + len(self.failed)
        if done == self.total:
            self.t1 = time.perf_counter()
            reactor.stop()
        elif self.started < self.total:
            self._place()

    def call_trying(self, call):
        """Ignored."""

    def call_ringing(self, call, early_sdp):
        """Ignored."""

    def call_answered(self, call, remote_sdp):
        """Hang up at once: the benchmark measures set-up plus tear-down."""
        self.answered += 1
        call.hangup()

    def call_failed(self, call, status, reason):
        """Count a failure (there should be none)."""
        self.failed.append((status, reason))
        self._finished()

    def call_ended(self, call, by_remote, reason):
        """Count a completed call; anything but our own hang-up is a failure."""
        if reason == "local hangup":
            self.ended += 1
        else:
            self.failed.append(("ended", reason))
        self._finished()

    def call_info(self, call, content_type, body):
        """Ignored."""

    def call_offer(self, call, remote_sdp):
        """Ignored."""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--ua-core", type=int, default=0)
    ap.add_argument(
        "--gc-tune",
        action="store_true",
        help="gc.freeze() after start-up and the server's gc.set_threshold(*GC_THRESHOLDS): a process-wide "
        "setting tap.py makes in the server; off by default",
    )
    ap.add_argument("--log", default=os.devnull, help="where the UA's log goes (as in production)")
    args = ap.parse_args()
    sipp = shutil.which("sipp")
    if sipp is None:
        sys.exit("sipp (Debian package sip-tester) is not on PATH")
    cores = sorted(os.sched_getaffinity(0))
    ua_core = args.ua_core if args.ua_core in cores else cores[0]
    sipp_cores = [c for c in cores if c != ua_core] or [ua_core]
    port = free_udp_port()
    proc = subprocess.Popen(
        [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-mp", str(free_udp_port()),
         "-nostdin", "-max_recv_loops", "10000", "-buff_size", "4194304"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, set(sipp_cores)),
    )  # fmt: skip
    os.sched_setaffinity(0, {ua_core})
    # Log as a deployed server does (one line per call), not into Twisted's start-up buffer.
    log_file = open(args.log, "a")  # noqa: SIM115
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)
    time.sleep(0.5)
    config = UAConfig(
        public_address="127.0.0.1", public_port=0, trunk_host="127.0.0.1", trunk_port=port,
        from_domain="cb.test", username="bench", password="bench", session_expires=0,
        keepalive_interval=0,
    )  # fmt: skip
    service = SipService(config, reactor)
    service.startService()
    service.protocol.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    if args.gc_tune:
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
    driver = Driver(service.ua, args.calls, args.concurrency)
    reactor.callWhenRunning(driver.start)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    reactor.run()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    proc.terminate()
    proc.wait()
    elapsed = (driver.t1 or time.perf_counter()) - driver.t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    done = driver.ended + len(driver.failed)
    print(f"UA pinned to core {ua_core}; sipp on cores {sipp_cores}; {len(cores)} cores visible;"
          f" gc {'tuned (freeze + thresholds)' if args.gc_tune else 'default'}")  # fmt: skip
    print(f"calls placed and torn down: {driver.ended} of {args.calls} "
          f"(concurrency {args.concurrency})")  # fmt: skip
    print(f"failed calls: {len(driver.failed)} {driver.failed[:5] if driver.failed else ''}")
    print(f"elapsed: {elapsed:.2f} s  ->  {done / elapsed:.0f} calls/s")
    print(f"UA CPU: {cpu:.2f} s  ->  {cpu / max(done, 1) * 1e6:.0f} us CPU per call")
    print("SIP messages through the UA per call: 6 (INVITE, 180, 200, ACK, BYE, 200)")


if __name__ == "__main__":
    main()
