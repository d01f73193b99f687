"""Soak: callbacks run continuously on two real ``twistd cbserver`` nodes while faults are
injected at random; at the end the money and the state are checked.

The world: a private PostgreSQL cluster (``tests/support/pgprivate.py``: the soak stops and
starts it), two nodes (``Node`` of ``tests/support/node.py``, as in the crash-recovery test)
on it, both node names with the demo product's rating-list entries
(``cbserver.devtools.democatalog``), and a lossy SIP trunk on a real UDP socket
(``LossyTrunk`` below, built on ``tests/support/sippeer.py``) that drops 10 % of datagrams both
ways and answers each leg at once, late (2-6 s), never (the node cancels at its 8 s no-answer
timeout) or busy, and hangs up answered legs after 2-20 s. Every ``--fault-every`` seconds
(15-30) the fault loop ``kill -9``s a node and restarts it 2-6 s later, or stops PostgreSQL for
2-6 s; each kind once per round, in a random order. At the end: stop injecting, restart what
is down, wait (event-driven, at most ``--drain`` seconds) until nothing is open, then check:

- for every account, Σ xDR amounts = its balance change (money unaccounted must be 0);
- every balance within what its account allows (debit >= 0, credit <= credit_limit);
- no session left unended, no hold (``balance_reservations``) nor live slot left, no recovery
  row left at all (a row left is a leak);
- every leg the trunk saw answered (200 sent and ACKed) has its xDR (by Call-ID).

Run: ``.venv/bin/python bench/soak.py --minutes 30 --seed 1 --rate 0.5`` (default 30 minutes);
exit 1 on a violation, keeping the work folder and showing what the logs say of each Call-ID
named. ``tests/integration/callback/test_soak_short.py`` runs it for 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the tests' support modules are imported
    sys.path.insert(0, str(ROOT))

from cbserver.devtools.democatalog import demo_catalog  # noqa: E402
from tests.support.node import Node, http, query  # noqa: E402
from tests.support.pgprivate import private_cluster  # noqa: E402
from tests.support.sippeer import Received, SipPeer, _headers  # noqa: E402

PASSWORD = "soak-pass-1"
DESTINATION = "18185550123"
T1 = 0.5  # RFC 3261 17.1.1.1
LIVE_SLOTS = ("SELECT count(*) FROM callback_slots t JOIN callback_sessions s ON s.id = t.callback_id "
              "WHERE s.status NOT IN ('ended', 'refused')")
UNENDED_RECOVERY = ("SELECT count(*) FROM callback_recovery r "
                    "JOIN callback_sessions s ON s.id = r.session_id "
                    "WHERE s.status NOT IN ('ended', 'refused')")
FAULTS = ("kill9", "pg_stop")
OPEN_SESSIONS = "SELECT count(*) FROM callback_sessions WHERE status <> 'ended'"


class LossyTrunk(SipPeer):
    """A carrier that loses 10 % of datagrams each way and answers each INVITE (decided
    once per Call-ID, so retransmissions get the same answer) at once, late (2-6 s), never,
    or busy (486). Its 200 is retransmitted until ACKed (RFC 3261 13.3.1.4); an answered leg
    is hung up after 2-20 s by a BYE retransmitted until answered (RFC 3261 17.1.2.2)."""

    def __init__(self, rng: random.Random, loss: float = 0.10):
        super().__init__()
        self.rng = rng
        self.loss = loss
        self.dropped = 0
        self.calls: dict[str, dict] = {}
        self.answered: set[str] = set()  # 200 sent and ACKed: the carrier bills it
        self.outcomes: dict[str, int] = {"at_once": 0, "late": 0, "never": 0, "busy": 0}
        self._timers: list[threading.Timer] = []

    def _send(self, text: str, dest) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        try:
            self.sock.sendto(text.encode(), dest)
        except OSError:
            pass

    def _later(self, delay: float, fn, *args) -> None:
        if self._stop:
            return
        t = threading.Timer(delay, self._guarded, (fn, *args))
        t.daemon = True
        self._timers.append(t)
        t.start()

    def _guarded(self, fn, *args) -> None:
        if self._stop:
            return
        with self.lock:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - a timer must not kill the trunk
                pass

    def _handle(self, text: str, source) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        head, _, _body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        h = _headers(lines[1:])
        call_id = h.get("call-id", [""])[0]
        if lines[0].startswith("SIP/2.0"):
            with self.lock:
                self._response(lines[0], h, call_id)
            return
        method, uri = lines[0].split()[:2]
        with self.lock:
            self.requests.append(Received(method, uri, call_id, h.get("cseq", [""])[0], source,
                                          time.monotonic()))
            getattr(self, f"_on_{method.lower()}", self._on_other)(h, call_id, source)

    def _reply(self, h, code: str, source, to: str | None = None, extra=(), body: str = "") -> str:
        out = [f"SIP/2.0 {code}"] + [f"Via: {v}" for v in h.get("via", [])]
        out += [f"From: {h.get('from', [''])[0]}", f"To: {to or h.get('to', [''])[0]}",
                f"Call-ID: {h.get('call-id', [''])[0]}", f"CSeq: {h.get('cseq', [''])[0]}", *extra,
                f"Content-Length: {len(body.encode())}"]
        text = "\r\n".join(out) + "\r\n\r\n" + body
        self._send(text, source)
        return text

    def _on_invite(self, h, call_id, source) -> None:
        call = self.calls.get(call_id)
        if call is None:
            kind = self.rng.choices(["at_once", "late", "never", "busy"], [5, 3, 1, 1])[0]
            self.outcomes[kind] += 1
            call = self.calls[call_id] = {
                "kind": kind, "h": h, "source": source, "tag": f"soak{len(self.calls) + 1}",
                "final": None, "acked": False, "ended": False, "cancelled": False}
            to = f"{h.get('to', [''])[0]};tag={call['tag']}"
            call["to"] = to
            if kind == "busy":
                call["final"] = self._reply(h, "486 Busy Here", source, to)
                return
            self._reply(h, "180 Ringing", source, to)
            if kind == "at_once":
                self._answer(call_id)
            elif kind == "late":
                self._later(self.rng.uniform(2, 6), self._answer, call_id)
            return
        # A retransmission: repeat the last answer (RFC 3261 17.2.1).
        if call["final"] is not None:
            self._send(call["final"], source)
        else:
            self._reply(h, "180 Ringing", source, call["to"])

    def _answer(self, call_id: str) -> None:
        call = self.calls[call_id]
        if call["final"] is not None or call["cancelled"]:
            return
        h = call["h"]
        rtp_port = self.rtp.getsockname()[1]
        body = (f"v=0\r\no=peer 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\n"
                f"t=0 0\r\nm=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
                f"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
        call["final"] = self._reply(h, "200 OK", call["source"], call["to"],
                                    [f"Contact: <sip:peer@{self.host}:{self.port}>",
                                     "Content-Type: application/sdp"], body)
        self._later(T1, self._resend_200, call_id, T1, time.monotonic() + 64 * T1)

    def _resend_200(self, call_id: str, interval: float, until: float) -> None:
        call = self.calls[call_id]
        if call["acked"] or call["ended"] or time.monotonic() > until:
            return
        self._send(call["final"], call["source"])
        nxt = min(2 * interval, 4.0)
        self._later(nxt, self._resend_200, call_id, nxt, until)

    def _on_ack(self, h, call_id, source) -> None:
        call = self.calls.get(call_id)
        if call is None or call["acked"] or not (call["final"] or "").startswith("SIP/2.0 200"):
            return
        call["acked"] = True
        self.answered.add(call_id)
        self._later(self.rng.uniform(2, 20), self._hang_up, call_id)

    def _on_cancel(self, h, call_id, source) -> None:
        call = self.calls.get(call_id)
        self._reply(h, "200 OK", source)
        if call is not None and call["final"] is None:
            call["cancelled"] = True
            ih = dict(call["h"])
            call["final"] = self._reply(ih, "487 Request Terminated", call["source"], call["to"])

    def _on_bye(self, h, call_id, source) -> None:
        call = self.calls.get(call_id)
        self._reply(h, "200 OK" if call else "481 Call/Transaction Does Not Exist", source)
        if call is not None:
            call["ended"] = True

    def _on_other(self, h, call_id, source) -> None:
        self._reply(h, "200 OK", source)

    def _hang_up(self, call_id: str) -> None:
        call = self.calls[call_id]
        if call["ended"]:
            return
        ih = call["h"]
        contact = ih.get("contact", [""])[0]
        target = contact[contact.find("<") + 1:contact.find(">")] if "<" in contact else contact.split(";")[0]
        branch = f"z9hG4bKsoak{self.rng.getrandbits(48):x}"
        bye = "\r\n".join([
            f"BYE {target} SIP/2.0", f"Via: SIP/2.0/UDP {self.host}:{self.port};branch={branch}",
            "Max-Forwards: 70", f"From: {call['to']}", f"To: {ih.get('from', [''])[0]}",
            f"Call-ID: {call_id}", "CSeq: 1 BYE", "Content-Length: 0"]) + "\r\n\r\n"
        call["bye"] = bye
        self._bye_again(call_id, T1, time.monotonic() + 64 * T1)

    def _bye_again(self, call_id: str, interval: float, until: float) -> None:
        call = self.calls[call_id]
        if call["ended"] or time.monotonic() > until:
            return
        self._send(call["bye"], call["source"])
        nxt = min(2 * interval, 4.0)
        self._later(interval, self._bye_again, call_id, nxt, until)

    def _response(self, status: str, h, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None and "BYE" in h.get("cseq", [""])[0]:
            call["ended"] = True

    def open_legs(self) -> int:
        """Answered legs not ended yet (by either side)."""
        with self.lock:
            return sum(1 for c in self.answered if not self.calls[c]["ended"])

    def stop(self) -> None:
        """Stop answering and cancel the timers."""
        self._stop = True
        for t in self._timers:
            t.cancel()
        super().stop()


NODES = ("node1", "node2")


def catalog(work: Path, accounts: list[str], balance: str, nodes=NODES) -> Path:
    """The demo's catalog, its rating lists for every soak node, plus the soak's prepaid
    accounts, each with a small balance."""
    return demo_catalog(work, accounts, PASSWORD, balance=balance, nodes=nodes)


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print the summary (and JSON of it); 0 if no violation."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--rate", type=float, default=0.5, help="callbacks per second")
    ap.add_argument("--accounts", type=int, default=12)
    ap.add_argument("--balance", default="0.60", help="each prepaid account's opening balance")
    ap.add_argument("--fault-every", type=float, nargs=2, default=(15.0, 30.0), metavar=("MIN", "MAX"),
                    help="seconds between two faults (uniform)")
    ap.add_argument("--drain", type=float, default=150.0,
                    help="at most this many seconds for the calls to drain after the faults stop")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the nodes' configurations and logs here (default: a temporary "
                         "folder, removed after a run without violation)")
    ap.add_argument("--summary", type=Path, default=None, help="write the summary as JSON here")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"soak: seed {seed}, {args.minutes} min, {args.rate}/s", flush=True)
    from cbserver.db.migrations import upgrade

    stats = {"seed": seed, "minutes": args.minutes, "attempted": 0, "accepted": 0, "refused": {},
             "faults": {"kill9": 0, "pg_stop": 0}}
    accounts = [f"cbsoak{i:03d}" for i in range(args.accounts)]
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    with private_cluster("cbsoak-pg-") as cluster:
        work = Path(tmp)
        dsn = cluster.dsn()
        upgrade(dsn, report=lambda _line: None)
        cbs = str(Path(sys.executable).parent / "cbserver")
        subprocess.run([cbs, "provision", str(catalog(work, accounts, args.balance)), "--dsn", dsn],
                       check=True, capture_output=True, timeout=300)
        balances = "SELECT id, balance, account_type, credit_limit FROM accounts"
        before = {r[0]: r[1] for r in query(dsn, balances)}
        trunk = LossyTrunk(random.Random(rng.random()))
        trunk.start()
        nodes = [Node(work, "node1", dsn, trunk.port), Node(work, "node2", dsn, trunk.port)]
        for n in nodes:
            # debug: every SIP call's Call-ID is in the log, to explain a violation. A late
            # answer (2-6 s) comes before the no-answer timeout (8 s); "never" meets it. The
            # pool reconnects within 2 s of PostgreSQL coming back (retry_max), so calls are
            # taken again at once and the faults overlap with real traffic.
            text = n.config.read_text()
            for old, new in (("shutdown_grace = 10.0", 'shutdown_grace = 10.0\nlog_level = "debug"'),
                             ("no_answer_timeout = 3.0", "no_answer_timeout = 8.0"),
                             ("[database]\n", "[database]\nretry_max = 2.0\n")):
                assert old in text, old
                text = text.replace(old, new)
            n.config.write_text(text)
        ids: list[str] = []
        try:
            for n in nodes:
                n.start()
            for n in nodes:
                n.wait_ready(120)  # generous: the machine may be loaded
            end = time.monotonic() + args.minutes * 60
            next_fault = time.monotonic() + rng.uniform(*args.fault_every)
            kinds: list[str] = []
            pending: list[tuple[float, object]] = []  # (when, action): restarts
            while time.monotonic() < end:
                now = time.monotonic()
                for when, action in [p for p in pending if p[0] <= now]:
                    pending.remove((when, action))
                    action()
                if now >= next_fault and not pending:
                    if not kinds:  # every kind once per round, in a random order
                        kinds = rng.sample(FAULTS, len(FAULTS))
                    if kinds.pop() == "kill9":
                        victim = rng.choice(nodes)
                        os.kill(victim.proc.pid, signal.SIGKILL)
                        victim.proc.wait()
                        stats["faults"]["kill9"] += 1
                        print(f"  fault: kill -9 {victim.name}", flush=True)
                        pending.append((now + rng.uniform(2, 6), victim.start))
                    else:
                        cluster.stop("immediate")
                        stats["faults"]["pg_stop"] += 1
                        print("  fault: PostgreSQL stopped", flush=True)
                        pending.append((now + rng.uniform(2, 6), cluster.start))
                    next_fault = now + rng.uniform(*args.fault_every)
                alive = [n for n in nodes if n.proc.poll() is None]
                if alive:
                    node = rng.choice(alive)
                    stats["attempted"] += 1
                    try:
                        code, body = http("POST", node.url("/api/v1/callbacks"), {
                            "application": "Web callback", "mode": "extended",
                            "account": rng.choice(accounts), "password": PASSWORD,
                            "phone": f"5511{rng.randrange(10**8):08d}", "destination": DESTINATION})
                    except (OSError, ValueError) as e:
                        code, body = 0, {"error": type(e).__name__}
                    if code == 202:
                        stats["accepted"] += 1
                        ids.append(body["id"])
                    else:
                        err = body.get("error", body)
                        if isinstance(err, dict):
                            err = f"{err.get('code', '')}: {err.get('message', '')}"
                        key = f"{code} {err}"[:70]
                        stats["refused"][key] = stats["refused"].get(key, 0) + 1
                time.sleep(rng.expovariate(args.rate))
            for _when, action in pending:  # undo the fault in progress
                action()
            for n in nodes:
                if n.proc.poll() is not None:
                    n.start()
            for n in nodes:
                n.wait_ready(120)
            # Drain: the trunk hangs up within 20 s (+ BYE retransmissions); recovery of a
            # killed node's legs within ~30 s; the no-answer timeout is a few seconds; spooled
            # xDRs are replayed. Each condition is an event seen in the database or on the
            # trunk, polled; the bound only stops a run that would never settle.
            drain_started = time.monotonic()
            stats["at_drain_start"] = {"open_sessions": query(dsn, OPEN_SESSIONS)[0][0],
                                       "trunk_open_legs": trunk.open_legs()}
            deadline = drain_started + args.drain
            while time.monotonic() < deadline and not quiescent(dsn, nodes, trunk):
                time.sleep(1)
            stats["drain_seconds"] = round(time.monotonic() - drain_started, 1)
            violations = check(dsn, before, trunk, stats)
        finally:
            for n in nodes:
                if n.proc is not None and n.proc.poll() is None:
                    n.stop()
            trunk.stop()
        stats["faults"].update(trunk_datagrams_dropped=trunk.dropped,
                               trunk_answered_late=trunk.outcomes["late"],
                               trunk_never_answered=trunk.outcomes["never"])
        stats["trunk"] = {"outcomes": trunk.outcomes, "answered_legs": len(trunk.answered),
                          "datagrams_dropped": trunk.dropped}
        stats["violations"] = violations
        if violations:
            stats["details"] = details(work, violations, trunk)
            stats["workdir"] = str(work)
        elif args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(stats, indent=1, default=str), flush=True)
        if args.summary:
            args.summary.write_text(json.dumps(stats, default=str))
        print(f"soak: {stats['attempted']} callbacks attempted, {stats['accepted']} accepted, "
              f"{stats['connected']} connected; faults {stats['faults']}; {stats['xdrs']} xDRs; "
              f"money unaccounted {stats['money_unaccounted']}; {len(violations)} violations", flush=True)
        return 1 if violations else 0


def details(work: Path, violations: list[str], trunk: LossyTrunk) -> dict:
    """For each Call-ID a violation names: the nodes' log lines about it and what the trunk saw
    (to find the cause; the work folder is kept)."""
    out = {}
    logs = {p.parent.name: p.read_text(errors="replace").splitlines() for p in work.glob("node*/out.log")}
    for call_id in sorted(set(re.findall(r"'([0-9a-f]+@[^']+)'", " ".join(violations))))[:5]:
        seen = [f"{name}: {line[:300]}" for name, lines in logs.items() for line in lines if call_id in line]
        call = trunk.calls.get(call_id, {})
        out[call_id] = {"trunk": {k: call.get(k) for k in ("kind", "acked", "ended", "cancelled")},
                        "logs": seen[:12]}
    return out


def quiescent(dsn: str, nodes, trunk: LossyTrunk) -> bool:
    """Every callback ended and settled: no open session, hold, live slot nor recovery row, no
    answered leg up at the trunk or without its xDR, and no xDR waiting in a node's spool."""
    try:
        open_sessions, leftovers = query(
            dsn, f"SELECT ({OPEN_SESSIONS}), (SELECT count(*) FROM balance_reservations) + "
                 f"({LIVE_SLOTS}) + (SELECT count(*) FROM callback_recovery)")[0]
        with_xdr = {r[0] for r in query(dsn, "SELECT call_id FROM xdrs WHERE call_id IS NOT NULL")}
    except Exception:  # noqa: BLE001 - PostgreSQL just restarted: not quiescent yet
        return False
    if open_sessions or leftovers or trunk.open_legs() or not trunk.answered <= with_xdr:
        return False
    for n in nodes:
        try:
            _code, body = http("GET", n.url("/healthz"))
        except (OSError, ValueError):
            return False
        if (body.get("xdr_spool") or {}).get("depth", 1) != 0:
            return False
    return True


def check(dsn: str, before: dict, trunk: LossyTrunk, stats: dict) -> list[str]:
    """The invariants; fills ``stats`` with the figures; returns the violations."""
    violations: list[str] = []
    after = {r[0]: r[1:] for r in query(dsn, "SELECT id, balance, account_type, credit_limit FROM accounts")}
    billed = dict(query(dsn, "SELECT account_id, sum(amount) FROM xdrs GROUP BY account_id"))
    unaccounted = Decimal(0)
    for account, (balance, kind, limit) in after.items():
        change = before[account] - balance if kind == "debit" else balance - before[account]
        diff = change - billed.get(account, Decimal(0))
        if diff != 0:
            unaccounted += abs(diff)
            violations.append(f"{account}: balance changed by {change}, xDRs sum {billed.get(account, 0)}")
        if kind == "debit" and balance < 0:
            violations.append(f"{account}: debit balance {balance} below zero")
        if kind == "credit" and limit is not None and balance > limit:
            violations.append(f"{account}: credit balance {balance} above its limit {limit}")
    stats["money_unaccounted"] = str(unaccounted)
    stats["xdrs"] = query(dsn, "SELECT count(*) FROM xdrs")[0][0]
    stats["xdr_amount"] = str(query(dsn, "SELECT coalesce(sum(amount), 0) FROM xdrs")[0][0])
    stats["connected"] = query(dsn, "SELECT count(DISTINCT session_id) FROM xdrs WHERE leg = 'B' "
                                    "AND duration > 0")[0][0] if _has_leg_b(dsn) else None
    stats["causes"] = dict(query(dsn, "SELECT coalesce(state->'cause'->>'code', '?'), count(*) "
                                      "FROM callback_sessions GROUP BY 1"))
    for what, sql in (("sessions not ended", OPEN_SESSIONS),
                      ("holds left", "SELECT count(*) FROM balance_reservations"),
                      # A slot whose callback's session is final is dead by design (cb_slot_live,
                      # sql/032: slots free themselves; pruned later): only a live one is left.
                      ("live slots left", LIVE_SLOTS),
                      # A recovery row of a callback not ended: its legs are not ended nor billed.
                      ("recovery rows of unended callbacks left", UNENDED_RECOVERY)):
        n = query(dsn, sql)[0][0]
        if n:
            violations.append(f"{n} {what}")
    stats["dead_slot_rows"] = query(dsn, "SELECT count(*) FROM callback_slots")[0][0]
    # Any recovery row left is a leak (a delete lost in an outage or a kill must be redone by
    # the recovery sweep, cbserver.callback.recovery): name whose, with its session's state.
    rows = query(dsn, "SELECT r.session_id, s.status, s.state->'cause'->>'code', s.node "
                      "FROM callback_recovery r LEFT JOIN callback_sessions s ON s.id = r.session_id")
    stats["recovery_rows_left"] = len(rows)
    if rows:
        violations.append(f"{len(rows)} recovery rows left: {rows[:8]}")
    with_xdr = {r[0] for r in query(dsn, "SELECT call_id FROM xdrs WHERE call_id IS NOT NULL")}
    missing = sorted(trunk.answered - with_xdr)
    if missing:
        violations.append(f"{len(missing)} answered legs without an xDR: {missing[:5]}")
    return violations


def _has_leg_b(dsn: str) -> bool:
    return bool(query(dsn, "SELECT count(*) FROM xdrs WHERE leg = 'B'")[0][0])


if __name__ == "__main__":
    sys.exit(main())
