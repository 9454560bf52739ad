"""The Grafana dashboard and the Prometheus alert rules, checked as code: the JSON is what
the builder script makes, every panel reads the provisioned Prometheus, and every query
names only metrics that a live exchange exposes on /metrics.

The helpers here (loading dashboards and rules, finding metric names in PromQL) are also
used by tests/telemetry/test_prometheus_live.py, which runs every query against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exchange.ledger.pool import migrate
from exchange.tools.simulator import BuyerSimulator, SimulatedBuyerSpec
from tests.support.harness import make_config, realtime_buyer, running_exchange

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "config" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources"
BUILDER = GRAFANA / "build_dashboards.py"
ALERTS = REPO / "config" / "prometheus" / "alerts.yml"
OBSERVABILITY_DOC = REPO / "docs" / "observability.md"

# Names Prometheus makes itself for every target; alert rules may use them.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
# Grafana's own variables, substituted by Grafana before a query reaches Prometheus.
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}
# The ledger's datasource (provisioning/datasources/ledger.yml) and the Grafana SQL macros
# its panels use, with what Grafana puts in their place.
LEDGER_TYPE = "grafana-postgresql-datasource"
SQL_MACROS = {"__timeFrom", "__timeTo"}
# SPEC section 7: "A Grafana dashboard ... shows each".
SPEC_METRICS = (
    "exchange_pings_total",
    "exchange_buyer_requests_total",
    "exchange_buyer_latency_seconds_bucket",
    "exchange_auction_duration_seconds_bucket",
    "exchange_sales_total",
    "exchange_revenue_dollars_total",
    "exchange_payout_dollars_total",
    "exchange_post_attempts_per_sale_bucket",
)


# ---------------------------------------------------------------------------------------
# Reading dashboards and rules


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel!r} / {self.ref_id}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows; rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries() -> list[PanelQuery]:
    """Every PromQL query of every panel (SQL queries to the ledger excepted)."""
    queries = []
    for path in dashboard_files():
        for panel in iter_panels(load_dashboard(path)):
            for target in panel.get("targets", []):
                if "rawSql" in target:
                    continue
                queries.append(
                    PanelQuery(path.name, panel["title"], target.get("refId", ""), target["expr"])
                )
    return queries


def ledger_queries() -> list[PanelQuery]:
    """Every SQL query of a panel reading the ledger's PostgreSQL."""
    return [
        PanelQuery(path.name, panel["title"], target.get("refId", ""), target["rawSql"])
        for path in dashboard_files()
        for panel in iter_panels(load_dashboard(path))
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


def provisioned(kind: str) -> list[dict[str, Any]]:
    return [
        source
        for path in sorted(DATASOURCES.glob("*.yml"))
        for source in yaml.safe_load(path.read_text())["datasources"]
        if source["type"] == kind
    ]


def label_variables(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(variable, label, metric) for each ``label_values(metric, label)`` query variable."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\(\s*([\w:]+)\s*,\s*(\w+)\s*\)", text)
        assert match, f"variable {variable['name']}: only label_values(metric, label) is used"
        found.append((variable["name"], match.group(2), match.group(1)))
    return found


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def substitute_variables(expr: str, values: dict[str, str]) -> str:
    """What Grafana sends Prometheus: ``$var``, ``${var}`` and ``[[var]]`` replaced."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def variables_used(expr: str) -> set[str]:
    return {a or b or c for a, b, c in re.findall(r"\$\{(\w+)[^}]*\}|\$(\w+)|\[\[(\w+)\]\]", expr)}


# ---------------------------------------------------------------------------------------
# Metric names in PromQL

_PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    keywords, label names (in matchers and grouping clauses) or durations."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\$\{\w+[^}]*\}|\$\w+|\[\[\w+\]\]", "1", text)  # template variables
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = re.sub(r"@\s*[\w.()]+", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if word.lower() in _PROMQL_WORDS:
            continue
        names.add(word)
    return names


def exposed_names(exposition: str) -> set[str]:
    """Series names a scrape of this text yields, including those of metric families that
    have no sample yet (a labelled counter nobody has incremented)."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "info": ("_info",),
    }
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def load_builder() -> ModuleType:
    pytest.importorskip(
        "grafana_foundation_sdk",
        reason="grafana-foundation-sdk is not installed: "
        "pip install 'grafana-foundation-sdk==1769699379!11.6.0' to check the JSON is fresh",
    )
    spec = importlib.util.spec_from_file_location("build_dashboards", BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def live_metric_names(database_url: str) -> set[str]:
    """Names on /metrics of a real exchange that has run one auction."""
    buyer = SimulatedBuyerSpec("steady", secret=b"steady-secret", bid_cents=(1500, 1500))
    async with BuyerSimulator([buyer]) as sim:
        config = make_config([realtime_buyer(sim, "steady")])
        async with running_exchange(config, database_url) as ex:
            answer = await ex.ping()
            await ex.post(answer["ping_id"])
            status, body, _ = await ex.call("GET", "/metrics", key=None)
            assert status == 200
            return exposed_names(body.decode() if isinstance(body, bytes) else str(body))


# ---------------------------------------------------------------------------------------
# Tests


def test_metric_names_skip_functions_labels_grouping_and_durations() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (buyer, le) (rate(exchange_buyer_latency_seconds_bucket"
        '{phase="ping", buyer=~"$buyer"}[$__rate_interval])))\n/ on (buyer) group_left '
        "sum(increase(exchange_sales_total[5m] offset 1d)) > bool 1e3 "
        'or vector($tmax_ms / 1000) unless absent(up{job="x"})'
    )
    assert metric_names(expr) == {
        "exchange_buyer_latency_seconds_bucket",
        "exchange_sales_total",
        "up",
    }
    assert metric_names("exchange_db_up == 0") == {"exchange_db_up"}
    assert metric_names('sum by (code) (rate(http{code=~"5.."}[5m])) > 0') == {"http"}


def test_dashboard_json_is_what_the_builder_script_makes() -> None:
    builder = load_builder()
    assert builder.OUTPUT.read_text() == builder.render(), (
        "config/grafana/dashboards/lead-exchange.json is stale: "
        "run python config/grafana/build_dashboards.py"
    )


def test_dashboards_are_valid_json_with_unique_uids_and_panel_ids() -> None:
    files = dashboard_files()
    assert files, "no dashboard in config/grafana/dashboards"
    uids = [load_dashboard(path)["uid"] for path in files]
    assert len(uids) == len(set(uids)), uids
    for path in files:
        dashboard = load_dashboard(path)
        assert dashboard["title"] and dashboard["schemaVersion"] >= 39, path.name
        ids = [panel["id"] for panel in dashboard["panels"]]
        ids += [p["id"] for row in dashboard["panels"] for p in row.get("panels", [])]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        assert all(isinstance(i, int) and i > 0 for i in ids), f"{path.name}: panel ids"


def test_every_panel_reads_a_provisioned_datasource_prometheus_or_the_ledger() -> None:
    (prometheus,) = provisioned("prometheus")
    (ledger,) = provisioned(LEDGER_TYPE)
    metrics = {"type": "prometheus", "uid": prometheus["uid"]}
    sql = {"type": LEDGER_TYPE, "uid": ledger["uid"]}
    assert ledger["user"] == "ledger_reader"  # the role that can only call report functions
    for path in dashboard_files():
        dashboard = load_dashboard(path)
        for panel in iter_panels(dashboard):
            expected = sql if panel.get("datasource") == sql else metrics
            assert panel.get("datasource") == expected, f"{path.name} / {panel['title']}"
            for target in panel["targets"]:
                assert target.get("datasource") == expected, f"{path.name} / {panel['title']}"
                where = f"{path.name} / {panel['title']}"
                assert ("rawSql" in target) == (expected == sql), where
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable["type"] == "query":
                assert variable["datasource"] == metrics, f"{path.name} / ${variable['name']}"


def test_every_panel_has_a_title_a_description_and_queries() -> None:
    for path in dashboard_files():
        for panel in iter_panels(load_dashboard(path)):
            where = f"{path.name} / {panel.get('title')!r}"
            assert panel.get("title") and panel.get("description"), where
            targets = panel.get("targets", [])
            assert targets, where
            assert all((t.get("expr") or t.get("rawSql") or "").strip() for t in targets), where
            ref_ids = [t.get("refId") for t in targets]
            assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), where


def test_queries_use_only_defined_variables() -> None:
    for path in dashboard_files():
        dashboard = load_dashboard(path)
        defined = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
        for panel in iter_panels(dashboard):
            for target in panel["targets"]:
                text = target.get("expr") or target["rawSql"]
                unknown = variables_used(text) - defined - GRAFANA_VARIABLES - SQL_MACROS
                assert not unknown, f"{path.name} / {panel['title']}: ${unknown}"


def test_every_spec_metric_has_a_panel() -> None:
    graphed = set().union(*(metric_names(q.expr) for q in panel_queries()))
    missing = [name for name in SPEC_METRICS if name not in graphed]
    assert not missing, f"SPEC section 7 metrics with no panel: {missing}"


def test_dashboard_queries_name_only_metrics_the_exchange_exposes(
    live_metric_names: set[str],
) -> None:
    unknown = {
        str(query): sorted(metric_names(query.expr) - live_metric_names)
        for query in panel_queries()
        if metric_names(query.expr) - live_metric_names
    }
    assert not unknown, f"queries naming metrics /metrics does not have: {unknown}"
    for path in dashboard_files():
        for name, _, metric in label_variables(load_dashboard(path)):
            assert metric in live_metric_names, f"{path.name} / ${name}: {metric}"
    # A query selecting no metric would pass the check above vacuously: there is none.
    constant = [q.expr for q in panel_queries() if not metric_names(q.expr)]
    assert constant == [], constant


def test_alert_rules_name_only_metrics_the_exchange_exposes(live_metric_names: set[str]) -> None:
    allowed = live_metric_names | PROMETHEUS_SERIES
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        assert names <= allowed, f"{rule['alert']}: {sorted(names - allowed)}"


def test_every_alert_has_a_severity_a_summary_and_a_documented_runbook() -> None:
    doc = OBSERVABILITY_DOC.read_text()
    headings = {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip()).lower().replace(" ", "-")
        for line in doc.splitlines()
        if line.startswith("#")
    }
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        path, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert (REPO / path) == OBSERVABILITY_DOC and anchor == name.lower(), name
        assert anchor in headings, f"{name}: no '### {name}' heading in {path}"


async def test_every_ledger_panel_query_runs_as_the_reader_that_can_read_no_table(
    database_url: str,
) -> None:
    """The SQL panels run as ledger_reader (provisioning/datasources/ledger.yml), which
    migration 0024 grants the report functions only: each query answers, and a table
    read is refused."""
    queries = ledger_queries()
    assert queries, "no panel reads the ledger"
    admin = await asyncpg.connect(database_url)
    password = uuid.uuid4().hex
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'ledger_reader'")
        try:
            if not exists:
                await admin.execute("CREATE ROLE ledger_reader LOGIN")
            await admin.execute(f"ALTER ROLE ledger_reader PASSWORD '{password}'")
        except asyncpg.InsufficientPrivilegeError:
            pytest.skip("DATABASE_URL's user may not create the ledger_reader role")
    finally:
        await admin.close()
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        await migrate(pool)  # after the role exists, as on docker-compose's database
    finally:
        await pool.close()
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    reader_url = urlunsplit(
        (parts.scheme, f"ledger_reader:{password}@{host}", parts.path, parts.query, "")
    )
    reader = await asyncpg.connect(reader_url)
    try:
        for query in queries:
            sql = query.expr.replace("$__timeFrom()", "'2026-01-01T00:00:00Z'")
            sql = sql.replace("$__timeTo()", "'2026-01-02T00:00:00Z'")
            assert "$" not in sql, f"{query}: a macro this test does not know"
            await reader.fetch(sql)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.fetch("SELECT * FROM pings LIMIT 1")
    finally:
        await reader.close()
