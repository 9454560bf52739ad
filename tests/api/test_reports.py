"""Reports come from hourly rollups kept in step with the ledger rows they summarise."""

from __future__ import annotations

from exchange.ledger.rollups import LATENCY_EDGES_US, latency_bucket, percentile_us
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import ADMIN_TOKEN, make_config, realtime_buyer, running_exchange


def test_latency_buckets_bound_the_percentile_within_one_bucket() -> None:
    latencies = [1_000 * n for n in range(1, 101)]  # 1..100 ms
    buckets: dict[int, int] = {}
    for value in latencies:
        bucket = latency_bucket(value)
        buckets[bucket] = buckets.get(bucket, 0) + 1
    p95 = percentile_us(buckets, 0.95)
    assert p95 is not None
    assert 95_000 <= p95 <= 95_000 * 1.15
    assert latency_bucket(LATENCY_EDGES_US[-1] * 10) == len(LATENCY_EDGES_US)


async def test_reports_count_what_the_auctions_did(database_url: str) -> None:
    specs = [
        SimulatedBuyerSpec("steady", secret=b"s1", bid_cents=(2000, 2000), latency_ms=(20, 20)),
        SimulatedBuyerSpec("picky", secret=b"s2", bid_cents=(3000, 3000), reject_rate=1.0),
        SimulatedBuyerSpec("slow", secret=b"s3", bid_cents=(9000, 9000), hang_rate=1.0),
    ]
    async with BuyerSimulator(specs) as sim:
        buyers = [realtime_buyer(sim, s.buyer_id) for s in specs]
        buyers.append({**realtime_buyer(sim, "steady"), "id": "texan",
                       "filters": {"state": {"in": ["TX"]}}})  # fmt: skip
        config = make_config(buyers, exchange={"tmax_ms": 200})
        async with running_exchange(config, database_url) as ex:
            for _ in range(4):
                answer = await ex.ping()
                await ex.post(answer["ping_id"])
            status, report, _ = await ex.call("GET", "/v1/reports/buyers", key=ADMIN_TOKEN)
            assert status == 200
            rows = {r["buyer"]: r for r in report["buyers"]}
            steady, picky, slow = rows["steady"], rows["picky"], rows["slow"]
            assert (steady["pings"], steady["bids"], steady["sales"], steady["posts"]) == (
                4,
                4,
                4,
                4,
            )
            assert steady["acceptance_rate"] == 1.0 and steady["revenue"] == 80.0
            assert 20 <= steady["p95_latency_ms"] <= 40
            assert (picky["wins"], picky["posts"], picky["sales"]) == (4, 4, 0)
            assert picky["acceptance_rate"] == 0.0
            assert (slow["timeouts"], slow["timeout_rate"], slow["bids"]) == (4, 1.0, 0)
            assert rows["texan"]["excluded"] == 4 and rows["texan"]["pings"] == 0
            status, sellers, _ = await ex.call("GET", "/v1/reports/sellers", key=ADMIN_TOKEN)
            acme = sellers["sellers"][0]
            assert (acme["pings"], acme["bids"], acme["posts"], acme["sales"]) == (4, 4, 4, 4)
            assert acme["payout"] == 68.0
            # Rebuilding the rollups from the rows gives the same numbers.
            await ex.ctx.store.rebuild_rollups()
            _, rebuilt, _ = await ex.call("GET", "/v1/reports/buyers", key=ADMIN_TOKEN)
            assert rebuilt == report


async def test_report_range_is_checked_and_widened_to_whole_hours(database_url: str) -> None:
    async with running_exchange(make_config([]), database_url) as ex:
        status, body, _ = await ex.call(
            "GET", "/v1/reports/buyers?from=2026-11-23T10:15:00Z&to=2026-11-23T11:30:00Z",
            key=ADMIN_TOKEN,
        )  # fmt: skip
        assert status == 200
        assert (body["from"], body["to"]) == ("2026-11-23T10:00:00Z", "2026-11-23T12:00:00Z")
        status, body, _ = await ex.call(
            "GET", "/v1/reports/sellers?from=yesterday", key=ADMIN_TOKEN
        )
        assert status == 422
        assert body["error"]["fields"] == [
            {"loc": ["query", "from"], "msg": "must be an ISO 8601 timestamp"}
        ]
