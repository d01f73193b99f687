"""Saying numbers, amounts of money and durations as sequences of prompt names (pure).

"your balance is twelve dollars and fifty cents" is
``["your_balance_is", "12", "dollars", "and", "50", "cents"]``; the player concatenates the
prompts. Numbers are read in American style without "and" inside them ("one hundred five").
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

_MAX_NUMBER = 999_999_999


class SpeechError(ValueError):
    """Something we have no words for."""


class UnsupportedCurrency(SpeechError):
    """A currency code with no currency words in the prompt set."""


@dataclass(frozen=True)
class CurrencyWords:
    """Prompt names for one currency's major and minor units."""

    major_one: str
    major_many: str
    minor_one: str
    minor_many: str


_DOLLAR = CurrencyWords("dollar", "dollars", "cent", "cents")
CURRENCIES: dict[str, CurrencyWords] = {
    "USD": _DOLLAR, "CAD": _DOLLAR, "AUD": _DOLLAR, "NZD": _DOLLAR,
    "EUR": CurrencyWords("euro", "euros", "cent", "cents"),
    "GBP": CurrencyWords("pound", "pounds", "penny", "pence"),
    "CHF": CurrencyWords("franc", "francs", "centime", "centimes"),
}


def say_number(n: int) -> list[str]:
    """Prompt names for a whole number from -999,999,999 to 999,999,999."""
    if abs(n) > _MAX_NUMBER:
        raise SpeechError(f"{n} is too large to say")
    if n < 0:
        return ["minus", *say_number(-n)]
    if n == 0:
        return ["0"]
    words: list[str] = []
    for scale, name in ((1_000_000, "million"), (1_000, "thousand")):
        if n >= scale:
            words += _below_thousand(n // scale) + [name]
            n %= scale
    if n:
        words += _below_thousand(n)
    return words


def _below_thousand(n: int) -> list[str]:
    """Names for 1..999."""
    words: list[str] = []
    if n >= 100:
        words += [str(n // 100), "hundred"]
        n %= 100
    if n >= 20:
        words.append(str(n // 10 * 10))
        n %= 10
    if n:
        words.append(str(n))
    return words


def say_digits(digits: str) -> list[str]:
    """Prompt names reading a digit string one digit at a time ("5551234")."""
    if not digits.isdigit() or not digits.isascii():
        raise SpeechError(f"{digits!r} is not a string of digits")
    return list(digits)


def say_amount(amount: Decimal, currency: str) -> list[str]:
    """Prompt names for an amount of money in an ISO 4217 currency.

    Rounded to the cent, half up ("12.505" is said as twelve dollars and fifty-one cents).
    """
    words = CURRENCIES.get(currency.upper())
    if words is None:
        raise UnsupportedCurrency(f"no currency words for {currency!r}")
    cents = int(Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP) * 100)
    out = ["minus"] if cents < 0 else []
    major, minor = divmod(abs(cents), 100)
    if major or not minor:
        out += say_number(major) + [words.major_one if major == 1 else words.major_many]
    if major and minor:
        out.append("and")
    if minor:
        out += say_number(minor) + [words.minor_one if minor == 1 else words.minor_many]
    return out


def say_minutes(minutes: int) -> list[str]:
    """Prompt names for a whole number of minutes ("thirty-five minutes")."""
    return say_number(minutes) + ["minute" if minutes == 1 else "minutes"]


def balance_announcement(amount: Decimal, currency: str) -> list[str]:
    """"Your balance is <amount>"."""
    return ["your_balance_is", *say_amount(amount, currency)]


def minutes_announcement(minutes: int) -> list[str]:
    """"You have <n> minute(s)"."""
    return ["you_have", *say_minutes(minutes)]


def prompt_names_needed() -> frozenset[str]:
    """Every prompt name this module can produce (to check a prompt set is complete)."""
    names = {str(i) for i in range(20)} | {str(t) for t in range(20, 100, 10)}
    names |= {"hundred", "thousand", "million", "and", "minus", "minute", "minutes"}
    names |= {"your_balance_is", "you_have"}
    for w in CURRENCIES.values():
        names |= {w.major_one, w.major_many, w.minor_one, w.minor_many}
    return frozenset(names)
