"""The stand-in carrier: ``sipp`` running ``scripts/sipp/carrier.xml``, for the demo and tests.

The scenario is a template: ``HOLD_MS`` (how long an answered call lasts before the carrier
hangs up), ``<!--DTMF_ACTIONS-->`` (what the 5599... keypad phone keys) and the digest
credentials it checks on 407... numbers are filled in by ``render``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from cbserver.resources import sipp_dir

SIPP_DIR = sipp_dir()


PCAP_DIR = Path("/usr/share/sip-tester")
DEFAULT_DTMF = "18005550100"
# The digest credentials the carrier asks of calls to 407... numbers.
TRUNK_USER = "cbtrunk"
TRUNK_PASSWORD = "trunk-secret-1"


def dtmf_actions(digits: str) -> str:
    """sipp actions keying ``digits`` as RFC 4733 packets; a comma is a 5 s pause."""
    lines = []
    for ch in digits:
        if ch == ",":
            lines.append('  <pause milliseconds="5000"/>')
        elif ch.isdigit():
            lines.append(f'  <nop><action><exec play_pcap_audio="{PCAP_DIR}/dtmf_2833_{ch}.pcap"/>'
                         "</action></nop>")
            lines.append('  <pause milliseconds="300"/>')
        else:
            raise ValueError(f"sipp has no capture for DTMF {ch!r}")
    return "\n".join(lines)


# What an answered call hears from the carrier (the template's <!--AUDIO_STREAM--> slot).
AUDIO_STREAM = '  <nop>\n    <action><exec rtp_stream="carrier-audio.wav,-1,0"/></action>\n  </nop>'


def render(hold_ms: int, digits: str = DEFAULT_DTMF, *, audio: bool = True) -> str:
    """The carrier scenario with its hold time and keypad digits filled in.

    ``audio=False`` answers without streaming audio (the callback benchmark's quiet carrier,
    so that the server relays no RTP); the keypad path is the same either way.
    """
    text = (SIPP_DIR / "carrier.xml").read_text()
    return (text.replace("HOLD_MS", str(int(hold_ms)))
            .replace("TRUNK_USER", TRUNK_USER).replace("TRUNK_PASSWORD", TRUNK_PASSWORD)
            .replace("<!--DTMF_ACTIONS-->", dtmf_actions(digits))
            .replace("<!--AUDIO_STREAM-->", AUDIO_STREAM if audio else ""))


def scenario(folder: Path, hold_ms: int, digits: str = DEFAULT_DTMF, *, audio: bool = True) -> Path:
    """A copy of the carrier scenario that hangs up answered calls after ``hold_ms``."""
    path = folder / "carrier.xml"
    path.write_text(render(hold_ms, digits, audio=audio))
    return path


class Carrier:
    """A running sipp carrier on 127.0.0.1:``port``."""

    def __init__(self, folder: Path, port: int, hold_ms: int = 60000, digits: str = DEFAULT_DTMF,
                 media_port: int | None = None, audio: bool = True):
        self.folder = folder
        self.audio = audio  # False: answer without streaming audio
        self.port = port
        self.hold_ms = hold_ms
        self.digits = digits
        self.media_port = media_port or (port + 10000 if port < 55000 else port - 10000)
        self.proc: subprocess.Popen | None = None
        # More sipp options (a test may set -trace_msg to see every SIP message on the wire).
        self.extra_args: tuple[str, ...] = ()

    def start(self) -> Carrier:
        """Start sipp; wait until its SIP port is bound."""
        sipp = shutil.which("sipp")
        if sipp is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        path = scenario(self.folder, self.hold_ms, self.digits, audio=self.audio)
        self.log = open(self.folder / "carrier.log", "w")
        self.proc = subprocess.Popen(
            [sipp, "-sf", str(path), "-i", "127.0.0.1", "-p", str(self.port), "-mi", "127.0.0.1",
             "-mp", str(self.media_port), "-aa", "-nostdin", "-trace_err", "-error_file",
             str(self.folder / "carrier-errors.log"), *self.extra_args],
            cwd=SIPP_DIR, stdout=subprocess.DEVNULL, stderr=self.log)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"sipp exited: {(self.folder / 'carrier.log').read_text()}")
        return self

    def stop(self) -> None:
        """Stop sipp."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
