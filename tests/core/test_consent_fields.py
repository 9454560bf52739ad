"""Consent evidence as lead fields (SPEC section 10): a TrustedForm certificate URL and a
Jornaya LeadiD token are validated, normalised and redacted like any field."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from exchange.config import parse_config
from exchange.core.fields import FieldSpec, LeadInvalid, LeadSchema
from exchange.tools.sample_lead import sample_lead
from tests.support.harness import config_text

CERT = "https://cert.trustedform.com/" + "0123456789abcdef" * 2 + "01234567"
TOKEN = "7F3B2C1D-4E5A-4B6C-8D7E-9F0A1B2C3D4E"

FIELDS = {
    "phone": FieldSpec(type="phone", pii=True, required=True),
    "state": FieldSpec(type="state", required=True),
    "trustedform_cert_url": FieldSpec(type="trustedform_url"),
    "leadid_token": FieldSpec(type="leadid_token"),
}
SCHEMA = LeadSchema("auto_insurance", FIELDS)
BASE = {"phone": "(415) 555-2671", "state": "CA"}

_hex = st.text(alphabet="0123456789abcdefABCDEF", min_size=40, max_size=40)


def _checked(field: str, value: object) -> Any:
    return SCHEMA.validate_full({**BASE, field: value})[field]


def _problem(field: str, value: object) -> str:
    with pytest.raises(LeadInvalid) as caught:
        SCHEMA.validate_full({**BASE, field: value})
    [problem] = caught.value.problems
    assert problem.loc == ("lead", field)
    return problem.msg


@given(_hex, st.sampled_from(["https://cert.trustedform.com/", "HTTPS://Cert.TrustedForm.COM/"]))
def test_a_trustedform_certificate_url_normalises_to_lower_case_and_validates_to_itself(
    digits: str, prefix: str
) -> None:
    normalised = _checked("trustedform_cert_url", f"  {prefix}{digits} ")
    assert normalised == "https://cert.trustedform.com/" + digits.lower()
    assert _checked("trustedform_cert_url", normalised) == normalised


@pytest.mark.parametrize(
    "value",
    [
        "http://cert.trustedform.com/" + "a" * 40,  # not https
        "https://cert.trustedform.com/" + "a" * 39,
        "https://cert.trustedform.com/" + "a" * 41,
        "https://cert.trustedform.com/" + "g" * 40,
        "https://cert.trustedform.com/" + "a" * 40 + "/",
        "https://cert.trustedform.com/" + "a" * 40 + "?shared_token=x",
        "https://cert.trustedform.com.evil.example/" + "a" * 40,
        "https://ping.trustedform.com/" + "a" * 40,
        "https://cert.tru\u017ftedform.com/" + "a" * 40,  # a long s folds to s outside ASCII
        "a" * 40,
        12345,
        ["https://cert.trustedform.com/" + "a" * 40],
    ],
)
def test_anything_but_a_trustedform_certificate_url_is_refused_without_echoing_it(
    value: object,
) -> None:
    message = _problem("trustedform_cert_url", value)
    assert "TrustedForm certificate URL" in message
    assert "aaaa" not in message and "evil" not in message


@given(st.uuids(), st.booleans())
def test_a_leadid_token_in_uuid_form_normalises_to_upper_case(
    token: uuid.UUID, upper: bool
) -> None:
    text = str(token).upper() if upper else str(token)
    normalised = _checked("leadid_token", text)
    assert normalised == str(token).upper()
    assert _checked("leadid_token", normalised) == normalised


@given(st.text(max_size=60))
def test_a_leadid_token_is_accepted_only_in_uuid_form(text: str) -> None:
    try:
        as_uuid = uuid.UUID(text.strip())
        canonical = str(as_uuid) == text.strip().lower()
    except ValueError:
        canonical = False
    if not text.strip():
        assert "leadid_token" not in SCHEMA.validate_full({**BASE, "leadid_token": text})
    elif canonical:
        assert _checked("leadid_token", text) == text.strip().upper()
    else:
        assert "LeadiD token" in _problem("leadid_token", text)


@pytest.mark.parametrize(
    "value",
    [TOKEN.replace("-", ""), "{" + TOKEN + "}", "urn:uuid:" + TOKEN, TOKEN[:-1], TOKEN + "0", 7],
)
def test_other_spellings_of_a_uuid_are_not_a_leadid_token(value: object) -> None:
    assert "LeadiD token" in _problem("leadid_token", value)


def test_a_trustedform_url_is_post_only_unless_declared_pingable() -> None:
    ping = SCHEMA.validate_ping({**BASE, "trustedform_cert_url": CERT, "leadid_token": TOKEN})
    assert "trustedform_cert_url" not in ping
    assert ping["leadid_token"] == TOKEN
    full = SCHEMA.validate_full({**BASE, "trustedform_cert_url": CERT, "leadid_token": TOKEN})
    assert SCHEMA.redact(full) == {"state": "CA", "leadid_token": TOKEN}
    pingable = FieldSpec(type="trustedform_url", pii=False)
    assert not pingable.pii
    assert FieldSpec(type="leadid_token").pii is False


def test_a_required_consent_field_missing_is_named() -> None:
    schema = LeadSchema(
        "auto_insurance",
        {**FIELDS, "leadid_token": FieldSpec(type="leadid_token", required=True)},
    )
    with pytest.raises(LeadInvalid) as caught:
        schema.validate_full(BASE)
    assert [(p.loc, p.msg) for p in caught.value.problems] == [
        (("lead", "leadid_token"), "is required")
    ]


def test_consent_fields_are_declared_in_a_vertical_from_yaml() -> None:
    doc = yaml.safe_load(config_text([]))
    doc["verticals"]["auto_insurance"]["fields"].update(
        trustedform_cert_url={"type": "trustedform_url", "required": True},
        leadid_token={"type": "leadid_token"},
    )
    loaded = parse_config(yaml.safe_dump(doc), "test.yaml", env={})
    fields = loaded.config.verticals["auto_insurance"].fields
    assert fields["trustedform_cert_url"].pii and fields["trustedform_cert_url"].required
    assert not fields["leadid_token"].pii


def test_the_sample_lead_has_valid_consent_fields() -> None:
    lead = sample_lead(FIELDS)
    assert SCHEMA.validate_full(lead)["leadid_token"] == lead["leadid_token"]
    assert SCHEMA.validate_full(lead)["trustedform_cert_url"] == lead["trustedform_cert_url"]
