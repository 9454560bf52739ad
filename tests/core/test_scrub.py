"""Buyer-supplied text loses the lead's personal data before it is stored."""

from __future__ import annotations

from exchange.core.scrub import pii_values, scrub


def test_lead_values_and_contact_shapes_are_redacted_from_reasons() -> None:
    lead = {"first_name": "Ada", "phone": "+14155552671", "zip": "90210"}
    values = pii_values(lead, ["first_name", "phone"])
    assert scrub("dup: ADA at 4155552671", values) == "dup: [redacted] at [redacted]"
    assert scrub("call (212) 555-0100 or x@y.io", values) == "call [number] or [email]"
    assert scrub("credit below 600 in zip 90210", values) == "credit below 600 in zip 90210"


def test_lead_ids_keep_their_digits_but_not_emails() -> None:
    assert scrub("123456789", free_text=False) == "123456789"
    assert scrub("ada.lovelace@7", free_text=False) == "[email]"
    assert scrub(None) is None
