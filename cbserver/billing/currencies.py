"""ISO 4217 currency codes accepted for tariffs, products and customers."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

#: Active ISO 4217 alphabetic codes (plus XXX-style codes that are not money are left out).
ISO_4217 = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP
BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR
KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK
MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWL
""".split())


def is_currency(code: object) -> bool:
    """True when ``code`` is a known ISO 4217 code in capitals (``USD``)."""
    return isinstance(code, str) and code in ISO_4217


#: ISO 4217 minor units (decimal places of the smallest coin) that differ from the usual 2.
_MINOR_UNITS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}


def minor_units(code: str) -> int:
    """How many decimal places an amount of money in ``code`` may have (ISO 4217: JPY 0, USD 2,
    KWD 3). Used for payments, which are real money; rates and charges keep finer precision."""
    if not is_currency(code):
        raise ValueError(f"unknown currency {code!r}")
    return _MINOR_UNITS.get(code, 2)


def minor_unit_exceptions() -> dict[str, int]:
    """Currencies whose minor units are not 2 (``{"JPY": 0, "KWD": 3, ...}``), for the page's script."""
    return dict(_MINOR_UNITS)


def format_amount(value, code: str | None) -> str:
    """An amount as shown to a person: the currency's usual precision (``0.12000`` USD -> ``0.12``).

    Rounded half up, as a price is read; xDRs and the API keep their 5 places. An unknown or
    missing currency, or a value that is not a number, is shown as given.
    """
    if value is None or value == "":
        return ""
    try:
        digits = minor_units(code) if code else None
        amount = Decimal(str(value))
    except (ValueError, InvalidOperation):
        return str(value)
    if digits is None or not amount.is_finite():
        return str(value)
    return str(amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))
