"""The prompt library: a language's WAV prompts loaded once and kept encoded per codec.

Prompts live in ``prompts/<language>/<name>.wav`` (8 kHz, mono, 16-bit PCM). An instance may
name an override folder (the manual's "Prompts customization"): a file there replaces the
default prompt of the same name. A custom file that is missing, unreadable or in the wrong
format falls back to the default with a logged warning, so a bad upload never silences the
IVR. A language folder that lacks a prompt borrows it from the fallback language (English).

Loading reads files, so it happens in ``load_prompt_library`` (called when the service starts),
never in the ``PromptLibrary`` constructor.
"""

import wave
from pathlib import Path

from zope.interface import Attribute, Interface, implementer

from cbserver.logs import Logger
from cbserver.media import g711
from cbserver.resources import prompts_dir

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz (RFC 3551 4.5)
CODECS = (g711.PCMU, g711.PCMA)

log = Logger()


class PromptError(Exception):
    """Base class of prompt library errors."""


class UnknownPrompt(PromptError, KeyError):
    """No prompt of that name in the library."""


class PromptFileError(PromptError):
    """A WAV file that is unreadable or not 8 kHz mono 16-bit PCM."""


class IPromptLibrary(Interface):
    """Prompts of one language, ready to send as RTP payload frames."""

    language = Attribute("The language code, e.g. 'en'.")

    def names():
        """The set of prompt names available."""

    def frames(name, codec):
        """The prompt as a tuple of 160-byte payload frames in ``codec`` (PCMU or PCMA)."""

    def pcm(name):
        """The prompt's linear 16-bit little-endian PCM samples."""


def read_wav(path: Path) -> bytes:
    """Return the PCM of an 8 kHz mono 16-bit WAV file, or raise PromptFileError."""
    try:
        with wave.open(str(path), "rb") as w:
            shape = (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getcomptype())
            if shape != (1, 2, SAMPLE_RATE, "NONE"):
                raise PromptFileError(
                    f"{path}: {shape[0]} channel(s), {8 * shape[1]}-bit, {shape[2]} Hz, "
                    f"{shape[3]}; expected 1 channel, 16-bit, {SAMPLE_RATE} Hz PCM"
                )
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise PromptFileError(f"{path}: {e}") from e
    if not data:
        raise PromptFileError(f"{path}: no audio")
    return data


def encode_frames(pcm: bytes, codec: str) -> tuple[bytes, ...]:
    """Encode PCM and cut it into 20 ms frames, padding the last with codec silence."""
    coded = g711.encode(codec, pcm)
    short = -len(coded) % FRAME_SAMPLES
    coded += g711.silence(codec, short)
    return tuple(coded[i:i + FRAME_SAMPLES] for i in range(0, len(coded), FRAME_SAMPLES))


@implementer(IPromptLibrary)
class PromptLibrary:
    """Prompts already decoded to PCM; encodes every prompt for every codec at construction."""

    def __init__(self, language: str, pcm_by_name: dict[str, bytes], codecs=CODECS):
        self.language = language
        self._pcm = dict(pcm_by_name)
        self._frames = {
            (name, codec): encode_frames(pcm, codec)
            for name, pcm in self._pcm.items()
            for codec in codecs
        }

    def names(self) -> frozenset[str]:
        """The set of prompt names available."""
        return frozenset(self._pcm)

    def frames(self, name: str, codec: str) -> tuple[bytes, ...]:
        """The prompt as 160-byte payload frames in ``codec``."""
        try:
            return self._frames[(name, codec.upper())]
        except KeyError:
            raise UnknownPrompt(f"no prompt {name!r} for codec {codec!r}") from None

    def pcm(self, name: str) -> bytes:
        """The prompt's 16-bit PCM."""
        try:
            return self._pcm[name]
        except KeyError:
            raise UnknownPrompt(f"no prompt {name!r}") from None


def _load_folder(folder: Path) -> dict[str, bytes]:
    """Every readable prompt of a folder; unreadable ones are logged and left out."""
    out = {}
    for path in sorted(folder.glob("*.wav")):
        try:
            out[path.stem] = read_wav(path)
        except PromptFileError as e:
            log.warn("prompt file skipped: {error}", error=str(e))
    return out


def load_prompt_library(
    language: str = "en", override_dir: Path | str | None = None, base_dir: Path | None = None,
    fallback_language: str = "en", codecs=CODECS,
) -> PromptLibrary:
    """Read a language's prompts (plus an instance's overrides) and return the library.

    Raises PromptError when neither the language nor the fallback language has any prompt.
    """
    base = Path(base_dir) if base_dir is not None else prompts_dir()
    pcm = _load_folder(base / language) if (base / language).is_dir() else {}
    if language != fallback_language and (base / fallback_language).is_dir():
        for name, data in _load_folder(base / fallback_language).items():
            if name not in pcm:
                log.warn(
                    "prompt {name} missing for language {language}; using {fallback}",
                    name=name, language=language, fallback=fallback_language,
                )
                pcm[name] = data
    if not pcm:
        raise PromptError(f"no prompts for language {language!r} under {base}")
    if override_dir is not None:
        _apply_overrides(pcm, Path(override_dir))
    return PromptLibrary(language, pcm, codecs)


def _apply_overrides(pcm: dict[str, bytes], folder: Path) -> None:
    """Replace defaults by same-named custom files; keep the default when one is bad."""
    if not folder.is_dir():
        log.warn("custom prompts folder {folder} not found; using defaults", folder=str(folder))
        return
    for path in sorted(folder.glob("*.wav")):
        try:
            data = read_wav(path)
        except PromptFileError as e:
            fallback = "the default" if path.stem in pcm else "nothing (no default exists)"
            log.warn(
                "custom prompt {name} rejected, using {fallback}: {error}",
                name=path.stem, fallback=fallback, error=str(e),
            )
            continue
        pcm[path.stem] = data
