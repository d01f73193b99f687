"""The prompt library (loading, overrides, fallbacks) and saying amounts and durations."""

import wave
from decimal import Decimal

import pytest
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from cbserver.media import g711, speech
from cbserver.media.prompts import (
    IPromptLibrary,
    PromptError,
    UnknownPrompt,
    encode_frames,
    load_prompt_library,
    read_wav,
)
from cbserver.resources import prompts_dir


def write_wav(path, samples, rate=8000, channels=1, width=2):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples)


def tone(value, n):
    return value.to_bytes(2, "little", signed=True) * n


@pytest.fixture
def warnings_logged():
    seen = []

    def observer(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


@pytest.fixture
def base(tmp_path):
    (tmp_path / "en").mkdir()
    (tmp_path / "de").mkdir()
    write_wav(tmp_path / "en" / "welcome.wav", tone(100, 400))
    write_wav(tmp_path / "en" / "goodbye.wav", tone(200, 160))
    write_wav(tmp_path / "de" / "welcome.wav", tone(300, 160))
    return tmp_path


def test_library_keeps_every_prompt_encoded_per_codec_in_20ms_frames(base):
    lib = load_prompt_library("en", base_dir=base)
    assert verifyObject(IPromptLibrary, lib)
    assert lib.names() == {"welcome", "goodbye"}
    frames = lib.frames("welcome", "PCMU")
    assert len(frames) == 3 and all(len(f) == 160 for f in frames)  # 400 samples, padded
    assert b"".join(frames)[:400] == g711.ulaw_encode(tone(100, 400))
    assert b"".join(frames)[400:] == g711.silence("PCMU", 80)
    assert lib.frames("welcome", "pcma")[0] == g711.alaw_encode(tone(100, 160))
    with pytest.raises(UnknownPrompt):
        lib.frames("nope", "PCMU")


def test_override_replaces_by_name_and_bad_custom_files_fall_back(base, tmp_path, warnings_logged):
    custom = tmp_path / "custom"
    custom.mkdir()
    write_wav(custom / "welcome.wav", tone(-5, 160))
    write_wav(custom / "goodbye.wav", tone(7, 160), rate=16000)   # wrong rate
    (custom / "broken.wav").write_bytes(b"RIFF....not a wav")
    lib = load_prompt_library("en", override_dir=custom, base_dir=base)
    assert lib.pcm("welcome") == tone(-5, 160)
    assert lib.pcm("goodbye") == tone(200, 160)
    assert "broken" not in lib.names()
    assert len(warnings_logged) == 2


def test_missing_override_folder_warns_and_uses_defaults(base, tmp_path, warnings_logged):
    lib = load_prompt_library("en", override_dir=tmp_path / "absent", base_dir=base)
    assert lib.pcm("welcome") == tone(100, 400)
    assert len(warnings_logged) == 1


def test_language_borrows_missing_prompts_from_fallback(base, warnings_logged):
    lib = load_prompt_library("de", base_dir=base)
    assert lib.pcm("welcome") == tone(300, 160)
    assert lib.pcm("goodbye") == tone(200, 160)
    assert len(warnings_logged) == 1
    with pytest.raises(PromptError):
        load_prompt_library("fr", base_dir=base, fallback_language="fr")


def test_read_wav_rejects_stereo_and_8_bit(tmp_path):
    write_wav(tmp_path / "s.wav", tone(1, 320), channels=2)
    write_wav(tmp_path / "b.wav", b"\x80" * 160, width=1)
    for name in ("s.wav", "b.wav"):
        with pytest.raises(PromptError):
            read_wav(tmp_path / name)


def test_encode_frames_pads_with_codec_silence():
    assert encode_frames(tone(0, 1), "PCMA") == (g711.silence("PCMA", 160),)


def test_shipped_english_set_is_complete_and_well_formed():
    lib = load_prompt_library("en")
    needed = speech.prompt_names_needed() | {
        "welcome", "enter_account_number", "enter_pin", "invalid", "try_again",
        "enter_destination", "please_wait", "busy", "no_answer", "not_enough_balance",
        "goodbye", "one_minute_left", "call_failed",
    }
    assert needed <= lib.names()
    texts = (prompts_dir() / "en.txt").read_text().splitlines()
    listed = {line.split("|")[0] for line in texts if line and not line.startswith("#")}
    assert listed == lib.names()
    for name in lib.names():
        assert 0.15 < len(lib.pcm(name)) / 2 / 8000 < 6.0, name


@pytest.mark.parametrize(("n", "words"), [
    (0, ["0"]),
    (7, ["7"]),
    (19, ["19"]),
    (35, ["30", "5"]),
    (100, ["1", "hundred"]),
    (105, ["1", "hundred", "5"]),
    (2024, ["2", "thousand", "20", "4"]),
    (1_000_001, ["1", "million", "1"]),
    (999_999_999, ["9", "hundred", "90", "9", "million", "9", "hundred", "90", "9", "thousand",
                   "9", "hundred", "90", "9"]),
    (-40, ["minus", "40"]),
])
def test_say_number(n, words):
    assert speech.say_number(n) == words


def test_say_number_limits():
    with pytest.raises(speech.SpeechError):
        speech.say_number(10**9)
    assert speech.say_digits("5061") == ["5", "0", "6", "1"]
    with pytest.raises(speech.SpeechError):
        speech.say_digits("12a")


@pytest.mark.parametrize(("amount", "cur", "words"), [
    ("12.50", "USD", ["12", "dollars", "and", "50", "cents"]),
    ("1.01", "usd", ["1", "dollar", "and", "1", "cent"]),
    ("0.75", "EUR", ["70", "5", "cents"]),
    ("3", "GBP", ["3", "pounds"]),
    ("1.02", "GBP", ["1", "pound", "and", "2", "pence"]),
    ("0.01", "GBP", ["1", "penny"]),
    ("0", "CHF", ["0", "francs"]),
    ("-2.5", "EUR", ["minus", "2", "euros", "and", "50", "cents"]),
    ("12.505", "USD", ["12", "dollars", "and", "50", "1", "cents"]),   # half up
    ("0.004", "USD", ["0", "dollars"]),
])
def test_say_amount(amount, cur, words):
    assert speech.say_amount(Decimal(amount), cur) == words


def test_announcements_and_unknown_currency():
    assert speech.balance_announcement(Decimal("12.50"), "USD") == [
        "your_balance_is", "12", "dollars", "and", "50", "cents"]
    assert speech.minutes_announcement(35) == ["you_have", "30", "5", "minutes"]
    assert speech.minutes_announcement(1) == ["you_have", "1", "minute"]
    with pytest.raises(speech.UnsupportedCurrency):
        speech.say_amount(Decimal(1), "XYZ")
