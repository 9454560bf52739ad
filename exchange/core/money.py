"""Exact money: integer cents inside, dollars with at most two decimals outside.

Floats never take part in arithmetic. A JSON number is parsed from its decimal text
(orjson hands us a float, so we go through ``repr`` which round-trips the shortest
decimal form) and refused if it has more than two decimals.
"""

from decimal import Decimal, InvalidOperation

CENTS_PER_DOLLAR = 100
# Larger amounts are refused before any arithmetic: no lead is worth a trillion dollars,
# and an exponent like 1e999999 must not reach Decimal's overflow trap.
MAX_DOLLARS_EXPONENT = 12


class MoneyError(ValueError):
    """A value that is not a valid amount of money."""


def parse_dollars(value: object) -> int:
    """Dollars (JSON number or decimal string) to integer cents; at most two decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise MoneyError("must be a number of dollars")
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise MoneyError("must be a number of dollars") from None
    if not amount.is_finite():
        raise MoneyError("must be a finite number of dollars")
    if amount and amount.adjusted() >= MAX_DOLLARS_EXPONENT:
        raise MoneyError("is too large")
    cents = amount * CENTS_PER_DOLLAR
    if cents != cents.to_integral_value():
        raise MoneyError("must have at most two decimals")
    if cents < 0:
        raise MoneyError("must not be negative")
    return int(cents)


def cents_to_dollars(cents: int) -> Decimal:
    """Integer cents to a two-decimal Decimal (for JSON and reports)."""
    return Decimal(cents).scaleb(-2)


def dollars_json(cents: int | None) -> float | None:
    """Cents to a JSON number. Exact: every two-decimal value round-trips through a float's
    shortest repr, and orjson writes that repr."""
    if cents is None:
        return None
    return float(cents_to_dollars(cents))


def dollars_text(cents: int) -> str:
    """Cents as dollars for messages: ``1000000`` is ``"10000.00"``."""
    return f"{cents_to_dollars(cents):.2f}"


def payout_cents(price_cents: int, payout_share: Decimal) -> int:
    """The seller's payout for a sale: price x share, rounded down to the cent.

    In integers: a finite Decimal is exactly numerator / denominator, and floor division
    rounds down as ROUND_FLOOR does (several times cheaper than Decimal arithmetic, and
    this runs for every ping answered)."""
    numerator, denominator = _ratio(payout_share)
    return price_cents * numerator // denominator


_RATIOS: dict[Decimal, tuple[int, int]] = {}


def _ratio(share: Decimal) -> tuple[int, int]:
    found = _RATIOS.get(share)
    if found is None:
        found = share.as_integer_ratio()
        if len(_RATIOS) < 1024:  # shares come from config: a handful of distinct values
            _RATIOS[share] = found
    return found
