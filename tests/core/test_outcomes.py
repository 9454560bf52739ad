"""The closed sets of words shared with sellers and the ledger keep their spelling."""

from __future__ import annotations

import orjson

from exchange.auction.answers import PostAnswer
from exchange.core.outcomes import PostStatus, UnsoldReason


def test_unsold_reasons_keep_the_words_sellers_are_given() -> None:
    assert [r.value for r in UnsoldReason] == [
        "no_bids", "below_min_price", "all_buyers_declined", "post_deadline",
        "post_interrupted", "duplicate", "suppressed", "hold_expired",
    ]  # fmt: skip


def test_an_unsold_reason_is_its_word_in_json_and_text() -> None:
    answer = PostAnswer("p", PostStatus.UNSOLD, None, None, UnsoldReason.ALL_DECLINED)
    assert orjson.dumps({"status": answer.status, "reason": answer.reason}) == (
        b'{"status":"unsold","reason":"all_buyers_declined"}'
    )
    assert f"{UnsoldReason.DEADLINE}" == str(UnsoldReason.DEADLINE) == "post_deadline"
    assert UnsoldReason("post_interrupted") is UnsoldReason.INTERRUPTED  # read back from the ledger
