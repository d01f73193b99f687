"""The call's seams: it runs on a CallContext (never the UserAgent), its state table is whole,
its log lines join the callback that placed it, and cbserver/sip has no import cycle."""

import ast
from pathlib import Path
from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver import logs
from cbserver.sip.auth import DigestClient
from cbserver.sip.call import Call
from cbserver.sip.call_dialog import IDialogOwner
from cbserver.sip.call_states import FINAL_STATES, TRANSITIONS, UNHANDLED, CallEvent, CallState
from cbserver.sip.context import CallContext, LocalParty, Trunk
from cbserver.sip.timers import SipTimers
from cbserver.sip.transaction import ITransactionUser, TransactionLayer
from cbserver.sip.txn_client import IClientTransactionUser
from cbserver.sip.ua import UserAgent
from tests.unit.sip_ua.fakes import FakeTransport
from tests.unit.sip_ua.uafakes import SDP_ANSWER, SDP_OFFER, FarEnd, Listener, config

SIP_DIR = Path(__file__).resolve().parents[3] / "cbserver" / "sip"


@implementer(ITransactionUser)
class _Router:
    """The smallest transaction user: routes in-dialog requests to the one call."""

    def __init__(self):
        self.call = None

    def request_received(self, request, txn, source):
        if request.method == "ACK":
            self.call.ack_received(request)
        else:
            self.call.request_received(request, txn)

    def stray_response(self, response, source):
        self.call.stray_2xx(response)


def _context(clock, transport, forgotten):
    router = _Router()
    timers = SipTimers(0.5, 4.0, 5.0)
    layer = TransactionLayer(transport, clock, timers, router)
    ctx = CallContext(
        clock=clock,
        layer=layer,
        transport=transport,
        timers=timers,
        digest=DigestClient("cbuser", "pw"),
        local=LocalParty("UDP", "127.0.0.1", 5070, "cbuser"),
        trunk=Trunk("127.0.0.1", 5080, "UDP"),
        forget=forgotten.append,
        from_domain="cb.example",
        user_agent="test",
        allow="INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE",
        session_expires=0,
        keepalive_interval=0,
    )
    return ctx, router


def test_a_call_runs_on_a_context_alone():
    clock, transport, forgotten = Clock(), FakeTransport(), []
    ctx, router = _context(clock, transport, forgotten)
    listener = Listener()
    call = Call(ctx, "15551234", call_id="c-1@127.0.0.1", caller_id="cb1818", display_name=None,
                sdp_offer=SDP_OFFER, extra_headers=(), no_answer_timeout=30, listener=listener)  # fmt: skip
    router.call = call
    assert verifyObject(IClientTransactionUser, call) and verifyObject(IDialogOwner, call)
    call.start()
    far = FarEnd(SimpleNamespace(sink=ctx.layer), transport)
    inv = far.last("INVITE")
    assert inv.uri == "sip:15551234@127.0.0.1:5080" and inv.headers.get("Call-ID") == "c-1@127.0.0.1"
    far.respond(inv, 200, SDP_ANSWER)
    assert call.state == CallState.CONFIRMED and far.last("ACK").headers.get("CSeq") == "1 ACK"
    d = call.hangup()
    far.respond(far.last("BYE"), 200)
    assert d.called and listener.events[-1] == ("ended", False, "local hangup")
    assert forgotten == [call]
    ctx.layer.stop()
    assert clock.getDelayedCalls() == []


def test_the_call_holds_no_reference_to_the_user_agent():
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    call = ua.place_call("1", caller_id="a", display_name=None, sdp_offer=SDP_OFFER,
                         no_answer_timeout=30, listener=Listener())  # fmt: skip
    far = FarEnd(ua, transport)
    far.respond(far.last("INVITE"), 200, SDP_ANSWER)
    assert call.ctx is ua.call_context
    held = list(vars(call).values()) + list(vars(call.ctx).values()) + list(vars(call._usage).values())
    assert all(value is not ua for value in held)
    assert all(getattr(value, "__self__", None) is not ua for value in held)  # no bound UA methods
    ua.stop()
    far.respond(far.last("BYE"), 200)
    clock.advance(40)
    assert clock.getDelayedCalls() == []


def test_state_table_names_real_methods_and_every_live_state_can_end():
    for (state, event), name in TRANSITIONS.items():
        assert isinstance(state, CallState) and isinstance(event, CallEvent)
        assert callable(getattr(Call, name, None)), name
    for name in UNHANDLED.values():
        assert callable(getattr(Call, name, None)), name
    for state in set(CallState) - FINAL_STATES:
        # The UA's stop() must be able to end any call that is not over yet.
        assert (state, CallEvent.SHUTDOWN) in TRANSITIONS, state
    for state in set(CallState) - {CallState.NEW}:
        # RFC 3261 13.2.2.4 / RFC 6026: every 2xx that reaches the call is ACKed.
        assert (state, CallEvent.ANSWERED) in TRANSITIONS, state


def _place_with_log_context(log_context):
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    with capturedLogs() as events:
        call = ua.place_call("1", caller_id="a", display_name=None, sdp_offer=SDP_OFFER,
                             no_answer_timeout=30, listener=Listener(), log_context=log_context)  # fmt: skip
        far = FarEnd(ua, transport)
        far.respond(far.last("INVITE"), 486)
    return call, [e for e in events if e.get("call_id") == call.call_id]


def test_the_call_id_is_logged_once_against_the_callback_id():
    call, events = _place_with_log_context("cb-42")
    placed = [e for e in events if e["log_format"].startswith("call placed")]
    assert len(placed) == 1 and placed[0]["callback_id"] == "cb-42"
    assert all(e.get("callback_id") == "cb-42" for e in events)
    assert any(e["log_format"].startswith("call {state}") and e["state"] == "failed" for e in events)


def test_without_a_log_context_the_call_logs_one_line():
    call, events = _place_with_log_context(None)
    assert [e["log_format"].split()[1] for e in events] == ["{state}"]
    assert events[0]["callback_id"] is None


def test_a_failed_call_is_logged_at_info_an_answered_and_ended_one_at_debug():
    """The success path writes fewer lines: an answered call that ends normally is told at
    debug (its callback's own end line has the cause); a failure stays at info."""
    _, failed = _place_with_log_context("cb-1")
    outcome = [e for e in failed if e["log_format"].startswith("call {state}")]
    assert [(e["state"], e["log_level"]) for e in outcome] == [("failed", LogLevel.info)]
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    level = logs.level()
    logs.set_level("debug")  # process-wide: another test may have left it at info
    try:
        with capturedLogs() as events:
            call = ua.place_call("1", caller_id="a", display_name=None, sdp_offer=SDP_OFFER,
                                 no_answer_timeout=30, listener=Listener(), log_context="cb-2")  # fmt: skip
            far = FarEnd(ua, transport)
            far.respond(far.last("INVITE"), 200, SDP_ANSWER)
            call.hangup()
            far.respond(far.last("BYE"), 200)
    finally:
        logs.set_level(level)
    mine = [e for e in events if e.get("call_id") == call.call_id]
    assert [(e["log_format"].split()[1], e["log_level"]) for e in mine] == [
        ("placed", LogLevel.info), ("{state}", LogLevel.debug)]
    assert mine[1]["state"] == "ended" and mine[1]["callback_id"] == "cb-2"


def _sip_imports():
    """{module: set of cbserver.sip modules it imports}, TYPE_CHECKING and function imports included."""
    graph = {}
    for path in SIP_DIR.glob("*.py"):
        name = f"cbserver.sip.{path.stem}"
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found.update(t for t in targets if (SIP_DIR / f"{t.rsplit('.', 1)[-1]}.py").exists()
                         and t.startswith("cbserver.sip."))  # fmt: skip
        graph[name] = found - {name}
    return graph


def test_call_modules_do_not_import_the_user_agent():
    graph = _sip_imports()
    for module in ("call", "call_dialog", "call_states", "context", "dialog"):
        assert "cbserver.sip.ua" not in graph[f"cbserver.sip.{module}"], module


def test_cbserver_sip_has_no_import_cycle():
    graph = _sip_imports()
    done, active = set(), []

    def visit(module):
        assert module not in active, " -> ".join(active[active.index(module) :] + [module])
        if module in done:
            return
        active.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        active.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
