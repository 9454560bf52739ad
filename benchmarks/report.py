"""Turning a run's results into ratios, target checks and the Markdown tables."""

from __future__ import annotations

from typing import Any

from benchmarks.plans import BASELINE, CEILING, DEADLINE_LOADS, PRIMARY, REFUSALS_METRIC

# The deadline runs of a server's entry: key, load as shown.
DEADLINE_RUNS = tuple((key, f"{share:.0%}") for key, share in DEADLINE_LOADS.items())

THROUGHPUT_GOAL = 0.8  # exchange >= 0.8 x ceiling at N = 10
ADDED_P99_GOAL_MS = 2.0  # at 50% load, over the ceiling at the same rate
TARGET_N = 10


def _runs(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["target"], r["n"]): r for r in results["runs"]}


def derive(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios against the baselines and the three targets, from the runs."""
    runs = _runs(results)
    ratios: list[dict[str, Any]] = []
    for (name, n), entry in runs.items():
        saturation = entry.get("saturation_per_s")
        if not saturation:
            continue
        row: dict[str, Any] = {"target": name, "n": n, "per_core": _per_core(entry)}
        for key, other in (("vs_baseline_a", BASELINE), ("vs_ceiling_b", CEILING)):
            reference = runs.get((other, n), {})
            measured = reference.get("saturation_per_s")
            row[key] = round(saturation / measured, 3) if measured else None
            per_core = _per_core(reference)
            row[f"{key}_per_core"] = (
                round(row["per_core"] / per_core, 3) if per_core and row["per_core"] else None
            )
        ratios.append(row)

    added: list[dict[str, Any]] = []
    for same in results.get("same_rate", []):
        mine = same.get("targets", {}).get(PRIMARY)
        theirs = same.get("targets", {}).get(CEILING)
        if mine is None or theirs is None:
            continue
        row = {"n": same["n"], "rate_per_s": round(same["rate_per_s"])}
        for name, values in same["targets"].items():
            row[f"{name}_p99_ms"] = _ms(values["latency_us"]["p99"])
        mine_lat, theirs_lat = mine["latency_us"], theirs["latency_us"]
        row["added_p50_ms"] = _diff(mine_lat["p50"], theirs_lat["p50"])
        row["added_p99_ms"] = _diff(mine_lat["p99"], theirs_lat["p99"])
        row["added_p99.9_ms"] = _diff(mine_lat["p99.9"], theirs_lat["p99.9"])
        added.append(row)

    deadline: list[dict[str, Any]] = []
    for (name, n), entry in runs.items():
        for key, load in DEADLINE_RUNS:
            run = entry.get(key)
            if run is None:
                continue
            outcome = run["outcome"]
            sent = max(1, outcome["sent"])
            misses = outcome["late"] + run["unanswered"] + outcome["errors"]
            deadline.append({"target": name, "n": n, "load": load,
                             "answers": outcome["completed"], "late": outcome["late"],
                             "unanswered": run["unanswered"], "errors": outcome["errors"],
                             "late_share": misses / sent})  # fmt: skip

    targets: list[dict[str, Any]] = []
    primary_ratio = next(
        (r["vs_ceiling_b"] for r in ratios if r["target"] == PRIMARY and r["n"] == TARGET_N), None
    )
    targets.append(_target(f"throughput {PRIMARY} / ceiling (b), N={TARGET_N}", primary_ratio,
                           f">= {THROUGHPUT_GOAL}", lambda v: v >= THROUGHPUT_GOAL))  # fmt: skip
    per_core_ratio = next(
        (r["vs_ceiling_b_per_core"] for r in ratios
         if r["target"] == PRIMARY and r["n"] == TARGET_N), None,
    )  # fmt: skip
    targets.append(_target(f"same, per core of CPU (1e6 / CPU us per ping), N={TARGET_N}",
                           per_core_ratio, f">= {THROUGHPUT_GOAL}",
                           lambda v: v >= THROUGHPUT_GOAL))  # fmt: skip
    for row in added:
        name = f"added p99 over ceiling at 50% load, N={row['n']} (ms)"
        targets.append(_target(name, row["added_p99_ms"], f"<= {ADDED_P99_GOAL_MS}",
                               lambda v: v <= ADDED_P99_GOAL_MS))  # fmt: skip
    for row in deadline:
        if row["target"].startswith("exchange"):
            targets.append(_target(f"answers past tmax + 5 ms, {row['target']}, "
                                   f"{row['load']} load",
                                   row["late"] + row["unanswered"] + row["errors"], "0",
                                   lambda v: v == 0))  # fmt: skip
    return {"ratios": ratios, "added_latency": added, "deadline": deadline, "targets": targets}


def _per_core(entry: dict[str, Any]) -> float | None:
    """Pings/s one core of the server process could serve, from its CPU per ping at 50%
    load: steadier than the measured saturation when other jobs share the machine."""
    cpu_us = entry.get("load50", {}).get("cost", {}).get("cpu_us_per_ping")
    return round(1e6 / cpu_us, 1) if cpu_us else None


def _target(name: str, value: float | None, goal: str, check: Any) -> dict[str, Any]:
    return {"name": name, "value": value, "goal": goal,
            "met": None if value is None else bool(check(value))}  # fmt: skip


def _ms(us: float | None) -> float | None:
    return None if us is None else round(us / 1000, 2)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round((a - b) / 1000, 2)


def _lat(run: dict[str, Any] | None) -> str:
    if not run or not run.get("latency_us", {}).get("count"):
        return "-"
    lat = run["latency_us"]
    return f"{lat['p50'] / 1000:.1f} / {lat['p99'] / 1000:.1f} / {lat['p99.9'] / 1000:.1f}"


def _own_connections(run: dict[str, Any]) -> str:
    """The exchange's own count of new buyer connections per 1k requests, from its
    exchange_buyer_connections_total (empty for the baselines, which do not count)."""
    counts = run.get("exchange_buyer_connections")
    if not counts:
        return ""
    sent = counts.get("opened", 0) + counts.get("reused", 0)
    return f" ({1000 * counts.get('opened', 0) / sent:.1f})" if sent else ""


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown(results: dict[str, Any]) -> str:
    derived = results["derived"]
    meta = results["meta"]
    ratios = {(r["target"], r["n"]): r for r in derived["ratios"]}
    out: list[str] = []
    machine = meta["machine"]
    out.append(
        f"Plan `{meta['plan']['name']}`, {meta['when']}, {machine['cpus']} CPUs, Python "
        f"{machine['python']}, aiohttp {machine['aiohttp']}, uvloop {machine['uvloop']}; "
        f"tmax {meta['tmax_ms']} ms; latency histogram: {meta['histogram']}; "
        f"wall time {meta.get('wall_s', '?')} s.\n"
    )
    out.append("### Throughput, latency, cost\n")
    out.append(
        "| N | server | pings/s at saturation | x (a) | x (b) | pings/s per core "
        "| x (b) per core | p50 / p99 / p99.9 ms at 50% | p50 / p99 / p99.9 ms at 80% "
        "| CPU us / ping / buyer | DB CPU us / ping | new buyer conns / 1k requests "
        "(the exchange's own count) |"
    )
    out.append("|---:|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
    for entry in results["runs"]:
        key = (entry["target"], entry["n"])
        if "error" in entry:
            out.append(f"| {entry['n']} | {entry['target']} | failed: "
                       f"{entry['error'].splitlines()[0][:80]} |||||||||||")  # fmt: skip
            continue
        ratio = ratios.get(key, {})
        cost = entry.get("load50", {}).get("cost", {})
        out.append(
            f"| {entry['n']} | {entry['target']} | {_num(entry.get('saturation_per_s'))} "
            f"| {_num(ratio.get('vs_baseline_a'), '{:.2f}')} "
            f"| {_num(ratio.get('vs_ceiling_b'), '{:.2f}')} "
            f"| {_num(ratio.get('per_core'))} "
            f"| {_num(ratio.get('vs_ceiling_b_per_core'), '{:.2f}')} "
            f"| {_lat(entry.get('load50'))} | {_lat(entry.get('load80'))} "
            f"| {_num(cost.get('cpu_us_per_ping_per_buyer'), '{:.1f}')} "
            f"| {_num(cost.get('db_cpu_us_per_ping') or None, '{:.0f}')} "
            f"| {_num(cost.get('buyer_new_connections_per_1k_requests'), '{:.1f}')}"
            f"{_own_connections(entry.get('load50', {}))} |"
        )
    for same in results.get("same_rate", []):
        if "targets" not in same:
            continue
        out.append(f"\n### Same load, N={same['n']}: every server at {same['rate_per_s']:.0f} "
                   f"pings/s (the primary's 50%), run in turns\n")  # fmt: skip
        out.append("| server | p50 ms | p99 ms | p99.9 ms | max ms | CPU us / ping |")
        out.append("|---|---:|---:|---:|---:|---:|")
        for name, row in same["targets"].items():
            lat = row["latency_us"]
            out.append(f"| {name} | {lat['p50'] / 1000:.1f} | {lat['p99'] / 1000:.1f} "
                       f"| {lat['p99.9'] / 1000:.1f} | {lat['max'] / 1000:.1f} "
                       f"| {row['cpu_us_per_ping']:.0f} |")  # fmt: skip
        added = next((a for a in derived["added_latency"] if a["n"] == same["n"]), None)
        if added:
            out.append(
                f"\nAdded by {PRIMARY} over {CEILING}: p50 {added['added_p50_ms']} ms, "
                f"p99 {added['added_p99_ms']} ms, p99.9 {added['added_p99.9_ms']} ms."
            )
    deadline_runs = [(e, key, load) for e in results["runs"] for key, load in DEADLINE_RUNS
                     if key in e]  # fmt: skip
    if deadline_runs:
        out.append("\n### Deadline adherence: buyers hang, answer late, fail; posts rejected\n")
        out.append(
            "| server | N | load | rate pings/s | machine busy cores | answers "
            "| past tmax+5 ms | of which the exchange "
            "saw | not 200 (of which ledger_late 503) | unanswered | p99 ms | p99.9 ms "
            "| max ms | new buyer conns / requests | posts sold / unsold |"
        )
        out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for entry, key, load in deadline_runs:
            run = entry[key]
            lat, outcome, cost = run["latency_us"], run["outcome"], run["cost"]
            posts = (f"{outcome['sold']} / {outcome['unsold']}" if outcome["posts_sent"]
                     else "-")  # fmt: skip
            scraped = run.get("exchange_metrics", {})
            seen = scraped.get("exchange_deadline_misses_total")
            ledger_late = scraped.get(f"{REFUSALS_METRIC}:ledger_late")
            out.append(
                f"| {entry['target']} | {entry['n']} | {load} | {run['options']['rate']:.0f} "
                f"| {cost['machine_busy_cores']:.2f} "
                f"| {outcome['completed']} | {outcome['late']} | {_num(seen)} "
                f"| {outcome['completed'] - outcome['ok']} ({_num(ledger_late)}) "
                f"| {run['unanswered']} "
                f"| {_num(_ms(lat.get('p99')), '{:.1f}')} "
                f"| {_num(_ms(lat.get('p99.9')), '{:.1f}')} "
                f"| {_num(_ms(lat.get('max')), '{:.1f}')} "
                f"| {cost['buyer_connections_opened']} / {cost['buyer_requests']} | {posts} |"
            )
    out.append("\n### Targets\n")
    out.append("| target | measured | goal | met |")
    out.append("|---|---:|---|---|")
    for target in derived["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[target["met"]]
        value = target["value"]
        shown = "-" if value is None else (f"{value:.3g}" if isinstance(value, float) else value)
        out.append(f"| {target['name']} | {shown} | {target['goal']} | {met} |")
    out.append("\n### The harness itself (80% runs): is anything but the server the limit?\n")
    out.append("| N | server | server cores | DB cores | buyer-server cores | load-gen cores "
               "| other processes' cores | buyer CPU us / request |")  # fmt: skip
    out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    for entry in results["runs"]:
        cost = entry.get("load80", {}).get("cost")
        if cost is None:
            continue
        out.append(
            f"| {entry['n']} | {entry['target']} | {cost['server_cores']:.2f} "
            f"| {cost['db_cores']:.2f} | {cost['buyers_cores']:.2f} | {cost['loadgen_cores']:.2f} "
            f"| {cost['other_cores']:.2f} | {cost['buyers_cpu_us_per_request']:.1f} |"
        )
    check = results.get("simulator_check")
    if check:
        out.append("\n### Buyer simulator check (ceiling server, N=10)\n")
        out.append("| buyers | ceiling pings/s | buyer CPU us / request | buyer cores |")
        out.append("|---|---:|---:|---:|")
        for name, row in check.items():
            if isinstance(row, dict):
                out.append(f"| {name} | {row['ceiling_saturation_per_s']:.0f} "
                           f"| {row['buyers_cpu_us_per_request']:.1f} "
                           f"| {row['buyers_cores']:.2f} |")  # fmt: skip
    profile = next((e["profile"] for e in results["runs"] if "profile" in e), None)
    if profile and profile.get("samples"):
        out.append(f"\n### Profile: {PRIMARY}, N=10, {profile['rate_per_s']} pings/s "
                   f"(py-spy, {profile['samples']} on-CPU samples)\n")  # fmt: skip
        out.append("| self time | % | | by area | % |")
        out.append("|---|---:|---|---|---:|")
        selfs, areas = profile["self"][:15], profile["areas"][:15]
        for index in range(max(len(selfs), len(areas))):
            left = selfs[index] if index < len(selfs) else {"name": "", "percent": ""}
            right = areas[index] if index < len(areas) else {"name": "", "percent": ""}
            out.append(f"| `{left['name']}` | {left['percent']} | | {right['name']} "
                       f"| {right['percent']} |")  # fmt: skip
    return "\n".join(out) + "\n"
