"""The Twisted shell around DTMF input and digit collection, with barge-in on prompts.

``DtmfInput`` gathers a leg's digits from RFC 4733 packets (via its RTP session) and from SIP
INFO requests (the SIP layer calls ``info``), and hands them to the collection in progress, or
keeps them as type-ahead until one starts. ``DigitCollection`` runs a ``DigitCollector`` with
timers from the injected clock. ``prompt_and_collect`` plays prompts and collects at once:
the first digit stops the prompt, and the first-digit timeout starts when the prompt ends.
"""

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from cbserver.logs import Logger, RateLimitedLog
from cbserver.media.collector import CollectOutcome, CollectResult, DigitCollector
from cbserver.media.dtmf import DtmfError, EventReceiver, parse_info
from cbserver.media.player import Player

_TYPEAHEAD = 32

log = Logger()
_limited = RateLimitedLog(log, lines=5, interval=60.0)  # INFO bodies are network input


class DtmfInput:
    """One leg's incoming digits, from RTP telephone-events and SIP INFO."""

    def __init__(self, call_id: str = ""):
        self.call_id = call_id
        self._receiver = EventReceiver()
        self._consumer = None
        self._buffer: list[str] = []
        self.digits_seen = ""  # every digit, in order (diagnostics and tests)

    def attach(self, session) -> None:
        """Receive the session's telephone-event packets."""
        session.event_sink = self.rtp_event

    def rtp_event(self, packet) -> None:
        """Feed one RFC 4733 packet (the session's event sink)."""
        digit = self._receiver.packet(packet.timestamp, packet.marker, packet.payload)
        if digit is not None:
            self._deliver(digit)

    def info(self, content_type: str, body: bytes | str) -> bool:
        """Feed a SIP INFO body; False when it carries no digit (the UA answers 415 then)."""
        try:
            digit = parse_info(content_type, body)
        except DtmfError as e:
            _limited.info("info-dtmf-malformed", "ignored INFO call_id={call_id}: {error}",
                          call_id=self.call_id, error=str(e))
            return False
        self._deliver(digit)
        return True

    def _deliver(self, digit: str) -> None:
        self.digits_seen += digit
        log.debug("dtmf {digit} call_id={call_id}", digit=digit, call_id=self.call_id)
        if self._consumer is not None:
            self._consumer(digit)
        elif len(self._buffer) < _TYPEAHEAD:
            self._buffer.append(digit)

    def set_consumer(self, consumer) -> None:
        """Route digits to ``consumer`` (or to the type-ahead buffer when None)."""
        self._consumer = consumer

    def take_typeahead(self) -> list[str]:
        """Digits pressed while nobody was collecting, oldest first; empties the buffer."""
        out, self._buffer = self._buffer, []
        return out

    def flush(self) -> None:
        """Drop type-ahead (e.g. before asking for a PIN after an error)."""
        self._buffer.clear()


class DigitCollection:
    """Runs one DigitCollector on a DtmfInput with timers from ``clock``."""

    def __init__(
        self, clock: IReactorTime, dtmf_input: DtmfInput, collector: DigitCollector,
        on_barge_in=None,
    ):
        self._clock = clock
        self._input = dtmf_input
        self._collector = collector
        self._on_barge_in = on_barge_in
        self._timer = None
        self._done: defer.Deferred | None = None

    def start(self) -> defer.Deferred:
        """Begin collecting (type-ahead first); the Deferred fires with a CollectResult."""
        self._done = defer.Deferred(canceller=lambda _d: self._end(self._collector.cancel()))
        d = self._done
        self._input.set_consumer(self._digit)
        for digit in self._input.take_typeahead():
            if self._done is None:
                break
            self._digit(digit)
        return d

    @property
    def finished(self) -> bool:
        """True once the result is known."""
        return self._done is None

    def arm(self) -> None:
        """Start the first-digit timeout now (call when the prompt has finished)."""
        if self._done is None:
            return
        self._collector.arm(self._clock.seconds())
        self._reschedule()

    def _digit(self, digit: str) -> None:
        first = not self._collector.barged_in
        result = self._collector.digit(digit, self._clock.seconds())
        if first and self._on_barge_in is not None:
            self._on_barge_in()
        if result is not None:
            self._end(result)
        else:
            self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = self._collector.deadline
        if deadline is not None:
            delay = max(0.0, deadline - self._clock.seconds())
            self._timer = self._clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        result = self._collector.expire(self._clock.seconds())
        if result is not None:
            self._end(result)
        else:
            self._reschedule()

    def _end(self, result: CollectResult) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._input.set_consumer(None)
        d, self._done = self._done, None
        if d is not None:
            d.callback(result)


def prompt_and_collect(
    clock: IReactorTime, media_clock, session, library, dtmf_input: DtmfInput, names,
    max_digits: int, first_digit_timeout: float = 5.0, inter_digit_timeout: float = 3.0,
    terminator: str | None = "#", call_id: str = "",
) -> defer.Deferred:
    """Play ``names`` and collect digits with barge-in; fires with a CollectResult."""
    player = Player(media_clock, session, library, names, call_id=call_id)
    collection = DigitCollection(
        clock, dtmf_input,
        DigitCollector(max_digits, first_digit_timeout, inter_digit_timeout, terminator),
        on_barge_in=player.stop,
    )
    result = collection.start()
    if collection.finished:
        return result  # type-ahead already answered; no need to play

    def played(_outcome):
        collection.arm()

    def failed(failure):
        log.failure("prompt failed call_id={call_id}", failure, call_id=call_id)
        collection.arm()

    player.play().addCallbacks(played, failed)

    def stop_player(res):
        player.stop()
        return res

    return result.addBoth(stop_player)


__all__ = ["CollectOutcome", "DigitCollection", "DtmfInput", "prompt_and_collect"]
