"""Lead field types: validation, normalisation, PII handling and error reporting."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from exchange.core.fields import FieldProblem, FieldSpec, LeadInvalid, LeadSchema
from exchange.core.storable import integer_problem, text_problem

# The SPEC's example vertical, plus one field of every other type.
FIELDS: dict[str, FieldSpec] = {
    "first_name": FieldSpec(type="string", pii=True, required=True),
    "last_name": FieldSpec(type="string", pii=True, required=True),
    "email": FieldSpec(type="email", pii=True, required=True),
    "phone": FieldSpec(type="phone", pii=True, required=True),
    "street_address": FieldSpec(type="string", pii=True),
    "birth_date": FieldSpec(type="date", pii=True),
    "zip": FieldSpec(type="zip", required=True),
    "state": FieldSpec(type="state", required=True),
    "age": FieldSpec(type="integer", min=Decimal(16), max=Decimal(120)),
    "credit_rating": FieldSpec(type="enum", values=("excellent", "good", "fair", "poor")),
    "homeowner": FieldSpec(type="boolean"),
    "vehicle_value": FieldSpec(type="number", min=Decimal("0"), max=Decimal("100000.50")),
    "policy_start": FieldSpec(type="date"),
    "comments": FieldSpec(type="string", max_length=20),
}
SCHEMA = LeadSchema("auto_insurance", FIELDS)

VALID_LEAD: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "phone": "(415) 555-2671",
    "zip": "90210",
    "state": "CA",
    "age": 36,
    "credit_rating": "good",
}


def lead_with(**changes: Any) -> dict[str, Any]:
    return {**VALID_LEAD, **changes}


def problems_of(lead: object, *, ping: bool = False) -> dict[str | int, str]:
    """Field name -> message for every problem; fails if the lead is valid."""
    with pytest.raises(LeadInvalid) as caught:
        (SCHEMA.validate_ping if ping else SCHEMA.validate_full)(lead)
    return {p.loc[-1]: p.msg for p in caught.value.problems}


def check_one(field: str, value: object) -> Any:
    """Validate VALID_LEAD with one field set to `value`; return that field's output."""
    return SCHEMA.validate_full(lead_with(**{field: value})).get(field)


def problem_for(field: str, value: object) -> str:
    found = problems_of(lead_with(**{field: value}))
    assert list(found) == [field]
    return found[field]


# --- FieldSpec (config) ---------------------------------------------------------------


def test_field_spec_parses_config_mapping_with_decimal_bounds() -> None:
    spec = FieldSpec.model_validate({"type": "integer", "min": 16, "max": 120.5})
    assert spec.min == Decimal(16)
    assert spec.max == Decimal("120.5")
    assert spec.max_length == 255 and not spec.pii and not spec.required


def test_field_spec_enum_values_list_becomes_tuple() -> None:
    spec = FieldSpec.model_validate({"type": "enum", "values": ["a", "b"]})
    assert spec.values == ("a", "b")


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "enum"},
        {"type": "enum", "values": []},
        {"type": "enum", "values": ["good", "Good"]},
        {"type": "enum", "values": ["good", " "]},
        {"type": "string", "values": ["a"]},
        {"type": "string", "min": 1},
        {"type": "zip", "max": 1},
        {"type": "integer", "min": 10, "max": 5},
        {"type": "integer", "min": "1.2", "max": "1.8"},
        {"type": "number", "min": "NaN"},
        {"type": "string", "max_length": 0},
        {"type": "uuid"},
        {"type": "string", "pii": True, "secret": True},
    ],
)
def test_field_spec_rejects_inconsistent_config(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FieldSpec.model_validate(raw)


def test_field_spec_is_frozen() -> None:
    spec = FieldSpec(type="string")
    with pytest.raises(ValidationError):
        spec.pii = True  # type: ignore[misc, unused-ignore]


def test_schema_exposes_vertical_fields_and_pii_fields() -> None:
    assert SCHEMA.vertical == "auto_insurance"
    assert SCHEMA.pii_fields == {
        "first_name",
        "last_name",
        "email",
        "phone",
        "street_address",
        "birth_date",
    }
    assert SCHEMA.fields["zip"] == FIELDS["zip"]
    with pytest.raises(TypeError):
        SCHEMA.fields["zip"] = FieldSpec(type="string")  # type: ignore[index]


# --- the lead as a whole --------------------------------------------------------------


def test_valid_lead_is_returned_normalised_in_declaration_order() -> None:
    out = SCHEMA.validate_full(dict(reversed(list(lead_with(state="california").items()))))
    assert out == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "phone": "+14155552671",
        "zip": "90210",
        "state": "CA",
        "age": 36,
        "credit_rating": "good",
    }
    assert list(out) == [name for name in FIELDS if name in out]


@pytest.mark.parametrize("lead", [None, [], "lead", 42, [("zip", "90210")], {1: "x"}])
def test_lead_that_is_not_an_object_is_rejected(lead: object) -> None:
    for validate in (SCHEMA.validate_full, SCHEMA.validate_ping):
        with pytest.raises(LeadInvalid) as caught:
            validate(lead)
        assert caught.value.problems == (FieldProblem(("lead",), "must be an object"),)


def test_lead_with_a_non_string_key_among_good_ones_is_not_an_object() -> None:
    lead: dict[Any, Any] = dict(VALID_LEAD)
    lead[7] = "x"
    with pytest.raises(LeadInvalid) as caught:
        SCHEMA.validate_full(lead)
    assert caught.value.problems == (FieldProblem(("lead",), "must be an object"),)


def test_unknown_field_is_rejected_naming_the_vertical() -> None:
    assert problems_of(lead_with(ssn="078-05-1120")) == {
        "ssn": "is not a field of vertical auto_insurance"
    }


def test_unknown_field_is_rejected_in_a_ping_too() -> None:
    ping = SCHEMA.redact(VALID_LEAD) | {"mothers_maiden_name": "Byron"}
    assert problems_of(ping, ping=True) == {
        "mothers_maiden_name": "is not a field of vertical auto_insurance"
    }


def test_all_problems_are_reported_together() -> None:
    lead = {
        "first_name": "Ada",
        "email": "not-an-email",
        "phone": "123",
        "zip": "9021",
        "state": "Narnia",
        "age": 12,
        "credit_rating": "superb",
        "homeowner": "yes",
        "extra": 1,
    }
    with pytest.raises(LeadInvalid) as caught:
        SCHEMA.validate_full(lead)
    problems = caught.value.problems
    assert all(p.loc[0] == "lead" and len(p.loc) == 2 for p in problems)
    assert {p.loc[1]: p.msg for p in problems} == {
        "last_name": "is required",
        "email": "is not a valid email address",
        "phone": "is not a valid phone number",
        "zip": "must be a 5-digit ZIP code",
        "state": "must be a US state code or name",
        "age": "must be between 16 and 120",
        "credit_rating": "must be one of: excellent, good, fair, poor",
        "homeowner": "must be true or false",
        "extra": "is not a field of vertical auto_insurance",
    }


def test_missing_required_field_is_required() -> None:
    lead = dict(VALID_LEAD)
    del lead["zip"]
    assert problems_of(lead) == {"zip": "is required"}


@pytest.mark.parametrize("absent", [None, "", "   "])
def test_none_or_blank_counts_as_missing_for_a_required_field(absent: object) -> None:
    assert problems_of(lead_with(state=absent, first_name=absent)) == {
        "state": "is required",
        "first_name": "is required",
    }


@pytest.mark.parametrize("absent", [None, "", " \t"])
def test_none_or_blank_optional_field_is_dropped(absent: object) -> None:
    lead = lead_with(comments=absent, credit_rating=absent, policy_start=absent, age=None)
    out = SCHEMA.validate_full(lead)
    assert not {"comments", "credit_rating", "policy_start", "age"} & out.keys()


def test_lead_invalid_message_names_fields_only() -> None:
    with pytest.raises(LeadInvalid) as caught:
        SCHEMA.validate_full(lead_with(zip="1"))
    assert str(caught.value) == "invalid lead: lead.zip: must be a 5-digit ZIP code"


# --- pings and redaction ------------------------------------------------------------


def test_ping_drops_pii_fields_without_error() -> None:
    out = SCHEMA.validate_ping(lead_with(street_address="1 Main St"))
    assert out == {"zip": "90210", "state": "CA", "age": 36, "credit_rating": "good"}
    assert not out.keys() & SCHEMA.pii_fields


def test_ping_does_not_validate_pii_fields() -> None:
    lead = lead_with(phone="123", email=["x"], first_name=None, birth_date="yesterday")
    assert SCHEMA.validate_ping(lead)["zip"] == "90210"


def test_ping_does_not_require_required_pii_fields() -> None:
    assert SCHEMA.validate_ping({"zip": "90210", "state": "tx"}) == {"zip": "90210", "state": "TX"}


def test_ping_enforces_required_non_pii_fields() -> None:
    assert problems_of({"first_name": "Ada", "zip": "90210"}, ping=True) == {"state": "is required"}


def test_ping_of_a_full_lead_equals_the_redacted_full_lead() -> None:
    lead = lead_with(comments="  call after 5 ", homeowner=True)
    assert SCHEMA.validate_ping(lead) == SCHEMA.redact(SCHEMA.validate_full(lead))


def test_redact_keeps_only_declared_non_pii_fields() -> None:
    full = SCHEMA.validate_full(VALID_LEAD) | {"smuggled": "ada@example.com"}
    assert SCHEMA.redact(full) == {
        "zip": "90210",
        "state": "CA",
        "age": 36,
        "credit_rating": "good",
    }


def test_errors_never_contain_the_pii_value() -> None:
    secrets = {
        "first_name": "X" * 300,  # too long
        "email": "ada.secret@@example.com",
        "phone": "secret-phone-555",
        "birth_date": "2001-02-30",
        "street_address": 123456789,
    }
    with pytest.raises(LeadInvalid) as caught:
        SCHEMA.validate_full(lead_with(**secrets))
    assert {p.loc[1] for p in caught.value.problems} == set(secrets)
    shown = str(caught.value) + " ".join(p.msg for p in caught.value.problems)
    for secret in ("XXXX", "secret", "2001", "123456789"):
        assert secret not in shown


def test_errors_never_echo_rejected_non_pii_values_either() -> None:
    with pytest.raises(LeadInvalid) as caught:
        SCHEMA.validate_full(lead_with(state="Atlantis", age=999, comments="Z" * 30))
    assert "Atlantis" not in str(caught.value)
    assert "999" not in str(caught.value)
    assert "ZZZ" not in str(caught.value)


# --- phone ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "(415) 555-2671",
        "+1 415-555-2671",
        "4155552671",
        "415.555.2671",
        "1 (415) 555 2671",
        " +14155552671 ",
        4155552671,
    ],
)
def test_phone_normalises_to_e164(raw: object) -> None:
    assert check_one("phone", raw) == "+14155552671"


def test_phone_accepts_a_valid_international_number() -> None:
    assert check_one("phone", "+44 20 7946 0958") == "+442079460958"


@pytest.mark.parametrize(
    "raw", ["555-2671", "123", "abc", "+1 415 555 26711", "+999 1234", True, 4.15e9, ["4155552671"]]
)
def test_phone_rejects_invalid_numbers(raw: object) -> None:
    assert problem_for("phone", raw) == "is not a valid phone number"


# --- email ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ada@example.com", "ada@example.com"),
        ("  Ada.Lovelace+Leads@Example.CO.uk ", "ada.lovelace+leads@example.co.uk"),
        ("o'neil@mail-host.example.org", "o'neil@mail-host.example.org"),
    ],
)
def test_email_is_stripped_and_lower_cased(raw: str, expected: str) -> None:
    assert check_one("email", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "ada@ex@ample.com",
        "ada lovelace@example.com",
        "ada@exa mple.com",
        "ada@example..com",
        "ada@.example.com",
        "ada@example.com.",
        "ada@-example.com",
        ".ada@example.com",
        "ada..l@example.com",
        "<ada@example.com>",
        "a" * 65 + "@example.com",
        42,
    ],
)
def test_email_rejects_bad_syntax(raw: object) -> None:
    assert problem_for("email", raw) == "is not a valid email address"


def test_email_longer_than_254_characters_is_rejected() -> None:
    domain = ".".join(["b" * 63] * 3) + ".com"
    longest = "a" * (254 - 1 - len(domain)) + "@" + domain
    assert len(longest) == 254
    assert check_one("email", longest) == longest
    raw = "a" + longest
    assert problem_for("email", raw) == "must be at most 254 characters"


# --- state ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("CA", "CA"),
        ("ca", "CA"),
        (" tx ", "TX"),
        ("california", "CA"),
        ("CALIFORNIA", "CA"),
        ("New  York", "NY"),
        ("district of columbia", "DC"),
        ("DC", "DC"),
        ("Puerto Rico", "PR"),
        ("U.S. Virgin Islands", "VI"),
        ("gu", "GU"),
    ],
)
def test_state_normalises_to_two_letter_code(raw: str, expected: str) -> None:
    assert check_one("state", raw) == expected


@pytest.mark.parametrize("raw", ["ZZ", "C", "Californ", "Narnia", "C A", 6, True, ["CA"]])
def test_state_rejects_unknown_states(raw: object) -> None:
    assert problem_for("state", raw) == "must be a US state code or name"


# --- zip --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("90210", "90210"), ("90210-1234", "90210"), (" 02134 ", "02134"), (90210, "90210")],
)
def test_zip_normalises_to_five_digits(raw: object, expected: str) -> None:
    assert check_one("zip", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "9021",
        "902101",
        "90210-12",
        "902101234",
        "abcde",
        "\u0669\u0660\u0662\u0661\u0660",  # Arabic-Indic digits: not a ZIP
        2134,  # a lost leading zero cannot be recovered
        -90210,
        90210.0,
        True,
    ],
)
def test_zip_rejects_anything_but_five_digits(raw: object) -> None:
    assert problem_for("zip", raw) == "must be a 5-digit ZIP code"


# --- integer ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [(16, 16), (120, 120), (30.0, 30), (45, 45)])
def test_integer_accepts_ints_and_integral_floats_within_bounds(raw: object, expected: int) -> None:
    out = check_one("age", raw)
    assert out == expected
    assert type(out) is int


@pytest.mark.parametrize("raw", [True, 30.5, "30", math.nan, math.inf, [30]])
def test_integer_rejects_non_integers(raw: object) -> None:
    assert problem_for("age", raw) == "must be an integer"


@pytest.mark.parametrize("raw", [15, 121, 15.0, -(10**30)])
def test_integer_bounds_are_inclusive_and_enforced(raw: object) -> None:
    assert problem_for("age", raw) == "must be between 16 and 120"


def test_integer_one_sided_bound_message() -> None:
    schema = LeadSchema("v", {"n": FieldSpec(type="integer", min=Decimal("2.5"))})
    assert schema.validate_full({"n": 3}) == {"n": 3}
    with pytest.raises(LeadInvalid) as caught:
        schema.validate_full({"n": 2})
    assert caught.value.problems[0].msg == "must be at least 2.5"


# --- number -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [0, 0.0, 12.75, 100000, 100000.5])
def test_number_accepts_ints_and_floats_within_bounds_unchanged(raw: object) -> None:
    out = check_one("vehicle_value", raw)
    assert out == raw
    assert type(out) is type(raw)


@pytest.mark.parametrize("raw", [True, "12.5", {"v": 1}, [1.0]])
def test_number_rejects_non_numbers(raw: object) -> None:
    assert problem_for("vehicle_value", raw) == "must be a number"


@pytest.mark.parametrize("raw", [math.nan, math.inf, -math.inf])
def test_number_rejects_non_finite_floats(raw: float) -> None:
    assert problem_for("vehicle_value", raw) == "must be a finite number"


@pytest.mark.parametrize("raw", [-0.01, 100000.51, 100001, -1])
def test_number_bounds_are_exact(raw: object) -> None:
    assert problem_for("vehicle_value", raw) == "must be between 0 and 100000.50"


def test_number_bound_not_exact_as_float_compares_exactly() -> None:
    schema = LeadSchema("v", {"x": FieldSpec(type="number", max=Decimal("0.1"))})
    assert schema.validate_full({"x": 0.1 - 1e-17}) == {"x": 0.1 - 1e-17}
    with pytest.raises(LeadInvalid):
        schema.validate_full({"x": 0.1000000000000001})


# --- boolean, enum, date, string ------------------------------------------------------


@pytest.mark.parametrize("raw", [True, False])
def test_boolean_accepts_true_and_false(raw: bool) -> None:
    assert check_one("homeowner", raw) is raw


@pytest.mark.parametrize("raw", [1, 0, "true", "false", "yes"])
def test_boolean_rejects_anything_else(raw: object) -> None:
    assert problem_for("homeowner", raw) == "must be true or false"


@pytest.mark.parametrize("raw", ["good", "GOOD", " Good ", "gOoD"])
def test_enum_matches_case_insensitively_to_declared_spelling(raw: str) -> None:
    assert check_one("credit_rating", raw) == "good"


def test_enum_keeps_declared_spelling_of_mixed_case_values() -> None:
    schema = LeadSchema("v", {"c": FieldSpec(type="enum", values=("FICO-High", "Low"))})
    assert schema.validate_full({"c": "fico-high"}) == {"c": "FICO-High"}


@pytest.mark.parametrize("raw", ["great", "goo", 1, True, ["good"]])
def test_enum_rejects_non_members_listing_the_members(raw: object) -> None:
    assert problem_for("credit_rating", raw) == "must be one of: excellent, good, fair, poor"


@pytest.mark.parametrize(
    ("raw", "expected"), [("2024-02-29", "2024-02-29"), (" 2025-01-31", "2025-01-31")]
)
def test_date_accepts_iso_calendar_dates(raw: str, expected: str) -> None:
    assert check_one("policy_start", raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["2023-02-29", "2024-13-01", "20240102", "2024-W01-1", "2024-1-5", "01/02/2024", 20240102],
)
def test_date_rejects_other_formats_and_impossible_dates(raw: object) -> None:
    assert problem_for("policy_start", raw) == "must be a date as YYYY-MM-DD"


def test_string_is_stripped() -> None:
    assert check_one("comments", "  hello  ") == "hello"


def test_string_longer_than_max_length_is_rejected() -> None:
    assert check_one("comments", "x" * 20) == "x" * 20
    assert problem_for("comments", "x" * 21) == "must be at most 20 characters"


@pytest.mark.parametrize("raw", [5, True, ["a"], {"a": 1}])
def test_string_rejects_non_strings(raw: object) -> None:
    assert problem_for("comments", raw) == "must be a string"


# --- properties -------------------------------------------------------------------------

AREA_CODES = ["201", "212", "310", "415", "512", "617", "713", "206", "305", "646"]


@st.composite
def raw_phones(draw: st.DrawFn) -> object:
    area = draw(st.sampled_from(AREA_CODES))
    exchange = str(draw(st.integers(200, 999)))
    line = f"{draw(st.integers(0, 9999)):04d}"
    layout = draw(
        st.sampled_from(
            [
                "{a}{e}{l}",
                "({a}) {e}-{l}",
                "+1 {a}-{e}-{l}",
                "1.{a}.{e}.{l}",
                " +1{a}{e}{l} ",
                "int",
            ]
        )
    )
    if layout == "int":
        return int(area + exchange + line)
    return layout.format(a=area, e=exchange, l=line)


def random_case(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda flips: "".join(
            c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True)
        )
    )


def padded(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["", " ", "\t"]), inner, st.sampled_from(["", " "])).map(
        "".join
    )


_word = st.from_regex(r"[A-Za-z0-9_%+'-]{1,12}", fullmatch=True)
_label = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
raw_emails = st.builds(
    lambda local, labels: ".".join(local) + "@" + ".".join(labels),
    st.lists(_word, min_size=1, max_size=3),
    st.lists(_label, min_size=2, max_size=4),
).flatmap(lambda e: padded(random_case(e)))

_STATE_SPELLINGS = ["CA", "TX", "NY", "DC", "PR", "California", "New York", "west virginia"]
raw_states = st.sampled_from(_STATE_SPELLINGS).flatmap(lambda s: padded(random_case(s)))

raw_zips = st.one_of(
    st.from_regex(r"[0-9]{5}(-[0-9]{4})?", fullmatch=True).flatmap(lambda z: padded(st.just(z))),
    st.integers(10000, 99999),
)

# Storable text (exchange/core/storable.py): a NUL or an unpaired surrogate makes a lead invalid.
storable_text = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
raw_strings = st.text(storable_text, min_size=1, max_size=20).filter(lambda s: s.strip() != "")

raw_valid_leads = st.fixed_dictionaries(
    {
        "first_name": padded(raw_strings),
        "last_name": raw_strings,
        "email": raw_emails,
        "phone": raw_phones(),
        "zip": raw_zips,
        "state": raw_states,
    },
    optional={
        "street_address": st.one_of(st.none(), raw_strings),
        "birth_date": st.dates().map(lambda d: d.isoformat()),
        "age": st.one_of(st.integers(16, 120), st.integers(16, 120).map(float)),
        "credit_rating": st.sampled_from(["excellent", "good", "fair", "poor"]).flatmap(
            lambda v: padded(random_case(v))
        ),
        "homeowner": st.booleans(),
        "vehicle_value": st.one_of(st.integers(0, 100000), st.floats(0, 100000.5, allow_nan=False)),
        "policy_start": st.one_of(st.none(), st.just(""), st.dates().map(str)),
        "comments": st.text(storable_text, max_size=20),
    },
)


@settings(max_examples=300)
@given(raw_valid_leads)
def test_normalisation_is_idempotent(raw: dict[str, Any]) -> None:
    full = SCHEMA.validate_full(raw)
    assert SCHEMA.validate_full(full) == full
    assert json.loads(json.dumps(full)) == full


@settings(max_examples=300)
@given(raw_valid_leads)
def test_ping_of_any_valid_lead_is_its_redaction(raw: dict[str, Any]) -> None:
    ping = SCHEMA.validate_ping(raw)
    assert ping == SCHEMA.redact(SCHEMA.validate_full(raw))
    assert not ping.keys() & SCHEMA.pii_fields
    assert SCHEMA.validate_ping(ping) == ping


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=300)
    | st.sampled_from(["", " ", "+1", "2024-02-30", "90210", "ca", "good", "a@b.c"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
garbage_leads = st.one_of(
    json_values,
    st.dictionaries(
        st.sampled_from(list(FIELDS)) | st.text(max_size=10), json_values, max_size=len(FIELDS) + 2
    ),
)


@settings(max_examples=500)
@given(garbage_leads)
def test_garbage_raises_nothing_but_lead_invalid(lead: object) -> None:
    for validate in (SCHEMA.validate_full, SCHEMA.validate_ping):
        try:
            out = validate(lead)
        except LeadInvalid as invalid:
            assert invalid.problems
            assert all(p.loc[0] == "lead" and p.msg for p in invalid.problems)
        else:
            assert set(out) <= set(FIELDS)
            assert json.loads(json.dumps(out)) == out
            assert all(_storable(value) for value in out.values())


def _storable(value: object) -> bool:
    if isinstance(value, str):
        return text_problem(value) is None
    if isinstance(value, int) and not isinstance(value, bool):
        return integer_problem(value) is None
    return True


MARKER = "Qx7\u00e9Secret"


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {name: st.text(max_size=40).map(lambda t: MARKER + t) for name in SCHEMA.pii_fields}
    ),
    st.dictionaries(st.sampled_from(list(FIELDS)), json_values, max_size=4),
)
def test_pii_values_never_appear_in_errors(pii: dict[str, str], rest: dict[str, Any]) -> None:
    lead = rest | pii
    try:
        SCHEMA.validate_full(lead)
    except LeadInvalid as invalid:
        assert MARKER not in str(invalid)
        assert all(MARKER not in p.msg for p in invalid.problems)
