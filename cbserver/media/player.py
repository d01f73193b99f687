"""Plays a sequence of prompts on an RTP session, one frame per media-clock tick.

``play()`` returns a Deferred that fires with ``PlayResult.DONE`` after the last frame, or with
``PlayResult.INTERRUPTED`` when ``stop()`` is called first (barge-in: a digit arrived) or the
Deferred is cancelled. A player plays once; with ``repeat=True`` it loops the sequence (e.g.
"please wait" while the other leg rings) until stopped.
"""

import enum

from twisted.internet import defer
from zope.interface import implementer

from cbserver.logs import Logger
from cbserver.media.clock import IMediaStream, MediaClock
from cbserver.media.prompts import IPromptLibrary


class PlayResult(enum.Enum):
    """How a playback ended."""

    DONE = "done"
    INTERRUPTED = "interrupted"


class PlayerStateError(RuntimeError):
    """``play()`` called on a player that already played."""


@implementer(IMediaStream)
class Player:
    """One playback of ``names`` (prompt names) in the session's codec."""

    log = Logger()

    def __init__(
        self, media_clock: MediaClock, session, library: IPromptLibrary, names, call_id: str = "",
        repeat: bool = False,
    ):
        self._media = media_clock
        self._session = session
        self.names = tuple(names)
        self.call_id = call_id
        # Resolve every name now: an unknown prompt is an error for the caller, not mid-call.
        # Keep the library's own frame tuples (shared, not copied): a player costs a few
        # references however long its sequence, and the garbage collector has little to walk.
        self._prompts = [
            f for f in (library.frames(name, session.codec) for name in self.names) if f
        ]
        self._total = sum(len(f) for f in self._prompts)
        self.repeat = repeat
        self._current = self._prompts[0] if self._prompts else ()
        self._index = 0  # which prompt
        self._pos = 0  # which frame of it
        self._played = 0
        self._done: defer.Deferred | None = None
        self._started = False

    @property
    def frames_sent(self) -> int:
        """Frames played (or skipped by a late clock) so far."""
        return self._played

    @property
    def total_frames(self) -> int:
        """Frames in the whole sequence."""
        return self._total

    def play(self) -> defer.Deferred:
        """Start sending; the Deferred fires with a PlayResult."""
        if self._started:
            raise PlayerStateError("a Player plays once; make a new one")
        self._started = True
        self._done = defer.Deferred(canceller=lambda _d: self._finish(PlayResult.INTERRUPTED))
        if not self._total:
            self._finish(PlayResult.DONE)
            return self._done
        self._session.begin_talkspurt()  # RFC 3551 4.1: marker on the first packet
        self._media.add(self)
        return self._done

    def stop(self) -> None:
        """Interrupt playback (barge-in); a no-op once finished."""
        self._finish(PlayResult.INTERRUPTED)

    def next_frame(self) -> None:
        """Send the next frame; finish after the last."""
        if self._session.closed:
            self._finish(PlayResult.INTERRUPTED)
            return
        self._session.send_audio(self._current[self._pos])
        self._played += 1
        self._pos += 1
        if self._pos >= len(self._current):
            self._next_prompt()

    def frames_skipped(self, count: int) -> None:
        """The clock skipped ``count`` ticks: drop that much audio, keep timestamps real-time."""
        if self.repeat and count >= self._total:
            # whole loops skipped: the position stays, time (and the timestamp) moves on
            loops, count = divmod(count, self._total)
            self._session.skip_samples(loops * self._total * 160)
            self._played += loops * self._total
        while count and self._done is not None:
            step = min(count, len(self._current) - self._pos)
            self._session.skip_samples(step * 160)
            self._played += step
            self._pos += step
            count -= step
            if self._pos >= len(self._current):
                self._next_prompt()

    def _next_prompt(self) -> None:
        """Move to the start of the next prompt; wrap (repeat) or finish after the last."""
        self._pos = 0
        self._index += 1
        if self._index >= len(self._prompts):
            if not self.repeat:
                self._finish(PlayResult.DONE)
                return
            self._index = 0
        self._current = self._prompts[self._index]

    def _finish(self, result: PlayResult) -> None:
        self._media.remove(self)
        d, self._done = self._done, None
        if d is not None:
            self.log.debug(
                "prompt {result} call_id={call_id} names={names} frames={frames}",
                result=result.value, call_id=self.call_id, names=self.names, frames=self._played,
            )
            d.callback(result)
