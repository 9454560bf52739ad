"""exchange/core/redirects.py: which buyer redirects a seller is given. A plain absolute
http(s) URL passes unchanged (trimmed); anything else is dropped whole, never mended."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.core.redirects import MAX_REDIRECT_CHARS, carries_any, clean_redirect
from exchange.core.storable import text_problem

LEAD_PII = ["ada.lovelace@example.com", "+14155552671", "4155552671", "Ada", "Lovelace"]


@pytest.mark.parametrize(
    "url",
    [
        "https://buyer.example/thanks?lead=L-9",
        "http://buyer.example:8080/t/42#done",
        "HTTPS://Buyer.Example/Path",
        "https://[2001:db8::1]/x",
        "https://buyer.example/a%20b?q=1&r=(2)",
        "https://canada.example/adams",  # "ada" inside words is not the name Ada
    ],
)
def test_a_plain_http_url_is_kept_as_given(url: str) -> None:
    assert clean_redirect(url, LEAD_PII) == url


def test_surrounding_whitespace_is_trimmed() -> None:
    assert clean_redirect("  https://buyer.example/x\n", LEAD_PII) == "https://buyer.example/x"


def test_a_redirect_of_the_maximum_length_is_kept_and_one_longer_dropped() -> None:
    base = "https://buyer.example/"
    longest = base + "x" * (MAX_REDIRECT_CHARS - len(base))
    assert clean_redirect(longest) == longest
    assert clean_redirect(longest + "x") is None


@pytest.mark.parametrize(
    "value",
    [
        "javascript:alert(1)",
        "data:text/html,<b>hi</b>",
        "ftp://buyer.example/x",
        "//buyer.example/x",
        "/thanks",
        "https://",
        "https:///path-only",
        "https://buyer.example/a b",
        "https://buyer.example/\r\nSet-Cookie: x=1",
        "https://buyer.example/\x00",
        'https://buyer.example/"onmouseover="x',
        "https://buyer.example/<script>",
        "https://buyer.example/ü",
        "https://bank.example@elsewhere.example/",
        "https://user:pass@buyer.example/",
        "https://buyer.example:99999/",
        "https://buyer.example:port/",
        "https://buyer.example:0/",
        "https://[::1/",
        "",
        "   ",
        42,
        None,
        True,
        ["https://buyer.example/"],
        {"url": "https://buyer.example/"},
    ],
)
def test_anything_but_a_plain_http_url_is_dropped(value: object) -> None:
    assert clean_redirect(value, LEAD_PII) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://buyer.example/t?email=ada.lovelace@example.com",
        "https://buyer.example/t?email=Ada.Lovelace%40Example.com",
        "https://buyer.example/t?phone=%2B14155552671",
        "https://buyer.example/t?phone=4155552671",
        "https://buyer.example/t?name=Ada+Lovelace",
        "https://buyer.example/welcome/ada",
    ],
)
def test_a_redirect_carrying_the_leads_pii_is_dropped_whole(url: str) -> None:
    assert clean_redirect(url, LEAD_PII) is None
    assert clean_redirect(url) == url  # the same URL with no PII known passes


@given(st.text(max_size=60), st.lists(st.text(min_size=3, max_size=12), max_size=3))
def test_whatever_passes_is_storable_bounded_http_and_carries_no_pii(
    value: str, pii: list[str]
) -> None:
    url = clean_redirect(value, pii)
    if url is None:
        return
    assert url == value.strip()
    assert len(url) <= MAX_REDIRECT_CHARS and text_problem(url) is None
    assert url.lower().startswith(("http://", "https://"))
    assert not any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in url)
    assert not carries_any(url, pii)


@given(
    st.from_regex(r"https://[a-z]{1,10}\.example/[A-Za-z0-9._~/-]{0,30}", fullmatch=True),
)
def test_every_plain_https_url_passes(url: str) -> None:
    assert clean_redirect(url) == url
