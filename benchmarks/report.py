"""Turning a run's rounds into figures with their spread, ratios, target checks, spread
warnings and the Markdown tables.

Every figure is the median of the rounds with the lowest and highest beside it
(benchmarks/spread.py). A ratio or a difference between two servers is taken within each
round first. The targets are judged on the median; a warning is raised where the spread
is wider than the effect a figure reports, or where the goal lies inside the spread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.plans import BASELINE, CEILING, DEADLINE_LOADS, PRIMARY, REFUSALS_METRIC
from benchmarks.spread import Spread, paired_difference, paired_ratio, shown

# The deadline runs of a server's entry: key, load as shown.
DEADLINE_RUNS = tuple((key, f"{share:.0%}") for key, share in DEADLINE_LOADS.items())

THROUGHPUT_GOAL = 0.8  # exchange >= 0.8 x ceiling at N = 10
ADDED_P99_GOAL_MS = 2.0  # at 50% load, over the ceiling at the same rate
# What a ping costs: the exchange's CPU and PostgreSQL's, against the ceiling's CPU at
# the same rate (the primary's 50% load), N = 10.
COST_GOAL = 1.8
TARGET_N = 10
PERCENTILES = ("p50", "p99", "p99.9")

Getter = Callable[[dict[str, Any]], float | None]


def _rounds(entry: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The rounds of an entry that worked, by round number."""
    return {r["round"]: r for r in entry.get("rounds", ()) if "error" not in r}


def _series(entry: dict[str, Any], get: Getter, numbers: list[int]) -> list[float | None]:
    rounds = _rounds(entry)
    out: list[float | None] = []
    for number in numbers:
        one = rounds.get(number)
        out.append(None if one is None else _safe(get, one))
    return out


def _safe(get: Getter, value: dict[str, Any]) -> float | None:
    try:
        return get(value)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _js(spread: Spread | None) -> dict[str, Any] | None:
    return None if spread is None else spread.to_json()


def _cost(key: str, load: str = "load50") -> Getter:
    return lambda r: r[load]["cost"][key]


def _latency_ms(load: str, percentile: str) -> Getter:
    return lambda r: r[load]["latency_us"][percentile] / 1000


def _per_core(r: dict[str, Any]) -> float | None:
    """Pings/s one core of the server process could serve, from its CPU per ping at 50%
    load: steadier than the measured saturation when other jobs share the machine."""
    cpu_us = r["load50"]["cost"]["cpu_us_per_ping"]
    return 1e6 / cpu_us if cpu_us else None


def _own_connections(r: dict[str, Any]) -> float | None:
    counts = r["load50"].get("exchange_buyer_connections")
    if not counts:
        return None
    sent = counts.get("opened", 0) + counts.get("reused", 0)
    return 1000 * counts.get("opened", 0) / sent if sent else None


ROW_FIGURES: dict[str, Getter] = {
    "saturation": lambda r: r["saturation_per_s"],
    "per_core": _per_core,
    **{f"lat50_{p}": _latency_ms("load50", p) for p in PERCENTILES},
    **{f"lat80_{p}": _latency_ms("load80", p) for p in PERCENTILES},
    "cpu_us_per_ping": _cost("cpu_us_per_ping"),
    "cpu_us_per_ping_per_buyer": _cost("cpu_us_per_ping_per_buyer"),
    "db_cpu_us_per_ping": lambda r: r["load50"]["cost"]["db_cpu_us_per_ping"] or None,
    "new_conns_per_1k": _cost("buyer_new_connections_per_1k_requests"),
    "own_new_conns_per_1k": _own_connections,
    **{
        f"h80_{k}": _cost(k, "load80")
        for k in (
            "server_cores",
            "db_cores",
            "buyers_cores",
            "loadgen_cores",
            "other_cores",
            "buyers_cpu_us_per_request",
        )
    },
}


def _round_numbers(results: dict[str, Any]) -> list[int]:
    rounds = int(results["meta"]["plan"].get("rounds", 1))
    return list(range(1, rounds + 1))


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the tables with its spread, the targets and the warnings."""
    numbers = _round_numbers(results)
    entries = {(e["target"], e["n"]): e for e in results["runs"]}
    rows = []
    for (name, n), entry in entries.items():
        row: dict[str, Any] = {"target": name, "n": n, "rounds": len(_rounds(entry))}
        if "error" in entry:
            row["error"] = entry["error"]
        for key, get in ROW_FIGURES.items():
            row[key] = _js(Spread.of(_series(entry, get, numbers)))
        for key, other in (("vs_baseline_a", BASELINE), ("vs_ceiling_b", CEILING)):
            reference = entries.get((other, n))
            if reference is None:
                continue
            row[key] = _js(
                paired_ratio(
                    _series(entry, ROW_FIGURES["saturation"], numbers),
                    _series(reference, ROW_FIGURES["saturation"], numbers),
                )
            )
            row[f"{key}_per_core"] = _js(
                paired_ratio(
                    _series(entry, _per_core, numbers), _series(reference, _per_core, numbers)
                )
            )
        rows.append(row)

    same_rate, added = [], []
    for same in results.get("same_rate", []):
        if "targets" not in same:
            continue
        table: dict[str, dict[str, Any]] = {}
        series: dict[str, dict[str, list[float | None]]] = {}
        for name, target in same["targets"].items():
            taken = target["rounds"]
            series[name] = {
                p: [r["latency_us"].get(p) for r in taken] for p in (*PERCENTILES, "max")
            }
            table[name] = {
                p: _js(Spread.of(v / 1000 for v in values if v is not None))
                for p, values in series[name].items()
            }
            table[name]["cpu_us_per_ping"] = _js(Spread.of(r["cpu_us_per_ping"] for r in taken))
            # Runs written before the database's CPU was kept here have none.
            series[name]["cost"] = [
                r["cpu_us_per_ping"] + r["db_cpu_us_per_ping"]
                if r.get("db_cpu_us_per_ping") is not None else None
                for r in taken
            ]  # fmt: skip
            table[name]["db_cpu_us_per_ping"] = _js(
                Spread.of(r.get("db_cpu_us_per_ping") or None for r in taken)
            )
        same_rate.append({"n": same["n"], "rate_per_s": same["rate_per_s"], "targets": table})
        if PRIMARY in series and CEILING in series:
            row = {"n": same["n"], "rate_per_s": round(same["rate_per_s"])}
            for p in PERCENTILES:
                mine = [None if v is None else v / 1000 for v in series[PRIMARY][p]]
                theirs = [None if v is None else v / 1000 for v in series[CEILING][p]]
                row[f"added_{p}_ms"] = _js(paired_difference(mine, theirs))
            # (Exchange + PostgreSQL) CPU per ping over the ceiling's, within each round.
            ceiling_cpu = [r["cpu_us_per_ping"] for r in same["targets"][CEILING]["rounds"]]
            row["cost_vs_ceiling"] = _js(paired_ratio(series[PRIMARY]["cost"], ceiling_cpu))
            added.append(row)

    deadline = [
        _deadline_row(entry, key, load, numbers)
        for entry in results["runs"]
        for key, load in DEADLINE_RUNS
        if any(key in r for r in _rounds(entry).values())
    ]

    targets = _targets(rows, added, deadline)
    return {
        "rounds": len(numbers),
        "rows": rows,
        "same_rate": same_rate,
        "added_latency": added,
        "deadline": deadline,
        "targets": targets,
        "warnings": _warnings(rows, added, targets),
    }


def _deadline_row(entry: dict[str, Any], key: str, load: str, numbers: list[int]) -> dict[str, Any]:
    def figure(get: Getter) -> dict[str, Any] | None:
        return _js(Spread.of(_series(entry, lambda r: get(r[key]), numbers)))

    def scraped(name: str) -> Getter:
        return lambda run: run.get("exchange_metrics", {}).get(name)

    return {
        "target": entry["target"],
        "n": entry["n"],
        "load": load,
        "rate": figure(lambda run: run["options"]["rate"]),
        "busy_cores": figure(lambda run: run["cost"]["machine_busy_cores"]),
        "answers": figure(lambda run: run["outcome"]["completed"]),
        "late": figure(lambda run: run["outcome"]["late"]),
        "seen": figure(scraped("exchange_deadline_misses_total")),
        "not_200": figure(lambda run: run["outcome"]["completed"] - run["outcome"]["ok"]),
        "ledger_late": figure(scraped(f"{REFUSALS_METRIC}:ledger_late")),
        "unanswered": figure(lambda run: run["unanswered"]),
        "errors": figure(lambda run: run["outcome"]["errors"]),
        "misses": figure(
            lambda run: run["outcome"]["late"] + run["unanswered"] + run["outcome"]["errors"]
        ),
        "p50": figure(lambda run: run["latency_us"]["p50"] / 1000),
        "p99": figure(lambda run: run["latency_us"]["p99"] / 1000),
        "p99.9": figure(lambda run: run["latency_us"]["p99.9"] / 1000),
        "max": figure(lambda run: run["latency_us"]["max"] / 1000),
        "conns_opened": figure(lambda run: run["cost"]["buyer_connections_opened"]),
        "requests": figure(lambda run: run["cost"]["buyer_requests"]),
        "sold": figure(
            lambda run: run["outcome"]["sold"] if run["outcome"]["posts_sent"] else None
        ),
        "unsold": figure(
            lambda run: run["outcome"]["unsold"] if run["outcome"]["posts_sent"] else None
        ),
    }


def _targets(
    rows: list[dict[str, Any]], added: list[dict[str, Any]], deadline: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    primary = next((r for r in rows if r["target"] == PRIMARY and r["n"] == TARGET_N), {})
    out = [
        _target(
            f"throughput {PRIMARY} / ceiling (b), N={TARGET_N}",
            primary.get("vs_ceiling_b"),
            THROUGHPUT_GOAL,
            ">=",
            effect_from=1.0,
        ),
        _target(
            f"same, per core of CPU (1e6 / CPU us per ping), N={TARGET_N}",
            primary.get("vs_ceiling_b_per_core"),
            THROUGHPUT_GOAL,
            ">=",
            effect_from=1.0,
        ),
    ]
    for row in added:
        out.append(
            _target(
                f"added p99 over ceiling at 50% load, N={row['n']} (ms)",
                row["added_p99_ms"],
                ADDED_P99_GOAL_MS,
                "<=",
                effect_from=0.0,
            )
        )
    for row in added:
        if row["n"] == TARGET_N and row.get("cost_vs_ceiling") is not None:
            out.append(
                _target(
                    f"(exchange + PostgreSQL CPU) / ceiling CPU per ping, same load, N={row['n']}",
                    row["cost_vs_ceiling"],
                    COST_GOAL,
                    "<=",
                    effect_from=1.0,
                )
            )
    for row in deadline:
        if row["target"].startswith("exchange"):
            out.append(
                _target(
                    f"answers past tmax + 5 ms, {row['target']}, {row['load']} load",
                    row["misses"],
                    0,
                    "==",
                    effect_from=0.0,
                )
            )
    return out


def _target(
    name: str, value: dict[str, Any] | None, goal: float, sense: str, effect_from: float
) -> dict[str, Any]:
    spread = Spread.from_json(value)
    checks = {">=": lambda v: v >= goal, "<=": lambda v: v <= goal, "==": lambda v: v == goal}
    return {
        "name": name,
        "goal": f"{sense} {goal:g}" if sense != "==" else f"{goal:g}",
        "value": None if spread is None else spread.median,
        "spread": _js(spread),
        "met": None if spread is None else bool(checks[sense](spread.median)),
        # The effect the figure reports: its distance from "no difference".
        "effect": None if spread is None else abs(spread.median - effect_from),
        "goal_inside": None if spread is None else spread.low < goal < spread.high,
    }


def _warnings(
    rows: list[dict[str, Any]], added: list[dict[str, Any]], targets: list[dict[str, Any]]
) -> list[str]:
    out = []
    checked: list[tuple[str, dict[str, Any] | None, float]] = []
    for row in rows:
        if row["target"] == PRIMARY:
            for key, what in (
                ("vs_ceiling_b", "throughput / ceiling (b)"),
                ("vs_ceiling_b_per_core", "per core / ceiling (b)"),
                ("vs_baseline_a", "throughput / baseline (a)"),
            ):
                checked.append((f"{PRIMARY} {what}, N={row['n']}", row.get(key), 1.0))
    for row in added:
        checked.append((f"added p99 over the ceiling, N={row['n']} (ms)", row["added_p99_ms"], 0.0))
    for name, value, zero in checked:
        spread = Spread.from_json(value)
        if spread is None or len(spread.values) < 2:
            continue
        effect = abs(spread.median - zero)
        if spread.width > effect:
            out.append(
                f"{name}: {spread.text('{:.3g}')}: the spread ({spread.width:.3g}) is "
                f"wider than the effect it reports ({effect:.3g} from {zero:g})"
            )
    for target in targets:
        if target["goal_inside"]:
            out.append(
                f"{target['name']}: the goal ({target['goal']}) lies inside the spread "
                f"{shown(target['spread'], '{:.3g}')}: this run does not decide it"
            )
    return out


# -- Markdown ---------------------------------------------------------------------------------


def _lat(row: dict[str, Any], load: str) -> str:
    cells = [shown(row.get(f"{load}_{p}"), "{:.1f}") for p in PERCENTILES]
    return "-" if all(c == "-" for c in cells) else " / ".join(cells)


def markdown(results: dict[str, Any]) -> str:
    derived = results["derived"]
    meta = results["meta"]
    out: list[str] = []
    machine = meta["machine"]
    out.append(
        f"Plan `{meta['plan']['name']}`, {meta['when']}, {machine['cpus']} CPUs, Python "
        f"{machine['python']}, aiohttp {machine['aiohttp']}, uvloop {machine['uvloop']}; "
        f"tmax {meta['tmax_ms']} ms; latency histogram: {meta['histogram']}; "
        f"wall time {meta.get('wall_s', '?')} s.\n"
    )
    out.append(
        f"{derived['rounds']} alternating rounds (A B A B ...): every figure is the median of "
        "the rounds, with [lowest..highest] beside it when they differ; a ratio or a "
        "difference between two servers is taken within each round first; the targets are "
        "judged on the median.\n"
    )
    out.append("### Throughput, latency, cost\n")
    out.append(
        "| N | server | pings/s at saturation | x (a) | x (b) | pings/s per core "
        "| x (b) per core | p50 / p99 / p99.9 ms at 50% | p50 / p99 / p99.9 ms at 80% "
        "| CPU us / ping / buyer | DB CPU us / ping | new buyer conns / 1k requests "
        "(the exchange's own count) |"
    )
    out.append("|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
    for row in derived["rows"]:
        if "error" in row and not row["rounds"]:
            out.append(
                f"| {row['n']} | {row['target']} | failed: "
                f"{row['error'].splitlines()[0][:80]} |||||||||||"
            )
            continue
        own = shown(row.get("own_new_conns_per_1k"), "{:.1f}")
        out.append(
            f"| {row['n']} | {row['target']} | {shown(row['saturation'])} "
            f"| {shown(row.get('vs_baseline_a'), '{:.2f}')} "
            f"| {shown(row.get('vs_ceiling_b'), '{:.2f}')} "
            f"| {shown(row['per_core'])} "
            f"| {shown(row.get('vs_ceiling_b_per_core'), '{:.2f}')} "
            f"| {_lat(row, 'lat50')} | {_lat(row, 'lat80')} "
            f"| {shown(row['cpu_us_per_ping_per_buyer'], '{:.1f}')} "
            f"| {shown(row['db_cpu_us_per_ping'])} "
            f"| {shown(row['new_conns_per_1k'], '{:.1f}')}"
            + (f" ({own})" if own != "-" else "")
            + " |"
        )
    for same in derived["same_rate"]:
        out.append(
            f"\n### Same load, N={same['n']}: every server at {same['rate_per_s']:.0f} "
            f"pings/s (the primary's 50%), run in turns, once a round\n"
        )
        out.append(
            "| server | p50 ms | p99 ms | p99.9 ms | max ms | CPU us / ping | DB CPU us / ping |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for name, row in same["targets"].items():
            out.append(
                f"| {name} | {shown(row['p50'], '{:.1f}')} | {shown(row['p99'], '{:.1f}')} "
                f"| {shown(row['p99.9'], '{:.1f}')} | {shown(row['max'], '{:.1f}')} "
                f"| {shown(row['cpu_us_per_ping'])} | {shown(row.get('db_cpu_us_per_ping'))} |"
            )
        added = next((a for a in derived["added_latency"] if a["n"] == same["n"]), None)
        if added:
            out.append(
                f"\nAdded by {PRIMARY} over {CEILING} (within each round): "
                f"p50 {shown(added['added_p50_ms'], '{:.2f}')} ms, "
                f"p99 {shown(added['added_p99_ms'], '{:.2f}')} ms, "
                f"p99.9 {shown(added['added_p99.9_ms'], '{:.2f}')} ms; (exchange + "
                f"PostgreSQL CPU) per ping over the ceiling's CPU: "
                f"{shown(added.get('cost_vs_ceiling'), '{:.2f}')}."
            )
    if derived["deadline"]:
        out.append("\n### Deadline adherence: buyers hang, answer late, fail; posts rejected\n")
        out.append(
            "| server | N | load | rate pings/s | machine busy cores | answers "
            "| past tmax+5 ms | of which the exchange "
            "saw | not 200 (of which ledger_late 503) | unanswered | p99 ms | p99.9 ms "
            "| max ms | new buyer conns / requests | posts sold / unsold |"
        )
        out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for row in derived["deadline"]:
            posts = f"{shown(row['sold'])} / {shown(row['unsold'])}" if row["sold"] else "-"
            out.append(
                f"| {row['target']} | {row['n']} | {row['load']} | {shown(row['rate'])} "
                f"| {shown(row['busy_cores'], '{:.2f}')} | {shown(row['answers'])} "
                f"| {shown(row['late'])} | {shown(row['seen'])} "
                f"| {shown(row['not_200'])} ({shown(row['ledger_late'])}) "
                f"| {shown(row['unanswered'])} | {shown(row['p99'], '{:.1f}')} "
                f"| {shown(row['p99.9'], '{:.1f}')} | {shown(row['max'], '{:.1f}')} "
                f"| {shown(row['conns_opened'])} / {shown(row['requests'])} | {posts} |"
            )
    out.append("\n### Targets (judged on the median)\n")
    out.append("| target | measured: median [lowest..highest] | goal | met | spread |")
    out.append("|---|---:|---|---|---|")
    for target in derived["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
        spread = Spread.from_json(target["spread"])
        note = ""
        if spread is not None and target["goal_inside"]:
            note = "goal inside the spread"
        elif spread is not None and len(spread.values) > 1 and spread.width > target["effect"]:
            note = "wider than the effect"
        out.append(
            f"| {target['name']} | {shown(target['spread'], '{:.3g}')} | {target['goal']} "
            f"| {met} | {note} |"
        )
    out.append("\n### Spread warnings\n")
    if derived["warnings"]:
        out.extend(f"- {warning}" for warning in derived["warnings"])
    else:
        out.append("None: every spread checked is narrower than the effect it reports.")
    out.append("\n### The harness itself (80% runs): is anything but the server the limit?\n")
    out.append(
        "| N | server | server cores | DB cores | buyer-server cores | load-gen cores "
        "| other processes' cores | buyer CPU us / request |"
    )
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    for row in derived["rows"]:
        if row.get("h80_server_cores") is None:
            continue
        out.append(
            f"| {row['n']} | {row['target']} | {shown(row['h80_server_cores'], '{:.2f}')} "
            f"| {shown(row['h80_db_cores'], '{:.2f}')} "
            f"| {shown(row['h80_buyers_cores'], '{:.2f}')} "
            f"| {shown(row['h80_loadgen_cores'], '{:.2f}')} "
            f"| {shown(row['h80_other_cores'], '{:.2f}')} "
            f"| {shown(row['h80_buyers_cpu_us_per_request'], '{:.1f}')} |"
        )
    _simulator_check(results, out)
    _profile(results, out)
    charts = results.get("charts")
    if charts:
        out.append("\n### Charts\n")
        out.extend(f"![{name}]({name})" for name in charts)
    return "\n".join(out) + "\n"


def _simulator_check(results: dict[str, Any], out: list[str]) -> None:
    check = results.get("simulator_check")
    if not check:
        return
    out.append("\n### Buyer simulator check (ceiling server, N=10)\n")
    out.append("| buyers | ceiling pings/s | buyer CPU us / request | buyer cores |")
    out.append("|---|---:|---:|---:|")
    for name, row in check.items():
        if isinstance(row, dict):
            out.append(
                f"| {name} | {row['ceiling_saturation_per_s']:.0f} "
                f"| {row['buyers_cpu_us_per_request']:.1f} "
                f"| {row['buyers_cores']:.2f} |"
            )


def _profile(results: dict[str, Any], out: list[str]) -> None:
    profile = next(
        (r["profile"] for e in results["runs"] for r in e.get("rounds", ()) if "profile" in r), None
    )
    if not profile or not profile.get("samples"):
        return
    out.append(
        f"\n### Profile: {PRIMARY}, N=10, {profile['rate_per_s']} pings/s, first round "
        f"(py-spy, {profile['samples']} on-CPU samples)\n"
    )
    out.append("| self time | % | | by area | % |")
    out.append("|---|---:|---|---|---:|")
    selfs, areas = profile["self"][:15], profile["areas"][:15]
    for index in range(max(len(selfs), len(areas))):
        left = selfs[index] if index < len(selfs) else {"name": "", "percent": ""}
        right = areas[index] if index < len(areas) else {"name": "", "percent": ""}
        out.append(
            f"| `{left['name']}` | {left['percent']} | | {right['name']} | {right['percent']} |"
        )
