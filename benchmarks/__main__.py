"""`python -m benchmarks [--quick | --smoke] [--rounds K] [--database-url URL] [--output DIR]`

Runs the plan (full by default: N = 1, 10, 30, every server, the simulator check and a
py-spy profile; --quick: N = 1 and 10, shorter windows, a few minutes), each server in
several alternating rounds, prints the Markdown tables (every figure the median of the
rounds with its lowest and highest) and the spread warnings, and writes them with the
JSON results and the PNG charts into benchmarks/results/: ``latest.*`` for the full plan,
``quick.*`` for --quick.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from benchmarks import charts
from benchmarks.plans import PLANS, TARGETS
from benchmarks.report import derive, markdown
from benchmarks.runner import run_plan

RESULTS = Path(__file__).with_name("results")
OUTPUT_NAMES = {"full": "latest", "quick": "quick", "smoke": "smoke"}


def write_results(results: dict[str, Any], folder: Path, stem: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    folded = results.pop("profile_folded", None)
    if folded:
        profile_path = folder / f"{stem}-profile.folded"
        profile_path.write_text(folded)
        results["profile_folded_file"] = profile_path.name
    if charts.available():
        results["charts"] = charts.write_charts(results, folder, stem)
    else:
        results["charts"] = []
        results["charts_skipped"] = "matplotlib is not installed: pip install '.[charts]'"
    json_path = folder / f"{stem}.json"
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    md_path = folder / f"{stem}.md"
    md_path.write_text(markdown(results))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="N = 1, 10; < 3 minutes")
    size.add_argument("--smoke", action="store_true", help="seconds; proves the harness works")
    parser.add_argument("--database-url", help="an existing PostgreSQL (default: embedded)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    parser.add_argument("--targets", help="comma-separated servers, a subset of the plan's")
    parser.add_argument("--buyers", help="comma-separated buyer counts instead of the plan's")
    parser.add_argument("--rounds", type=int, help="alternating rounds instead of the plan's")
    parser.add_argument(
        "--profile",
        type=float,
        metavar="SECONDS",
        help="py-spy profile of the primary exchange at N=10 for this long",
    )
    args = parser.parse_args(argv)
    plan = PLANS["quick" if args.quick else "smoke" if args.smoke else "full"]
    if args.targets:
        names = tuple(args.targets.split(","))
        unknown = [n for n in names if n not in TARGETS]
        if unknown:
            parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
        plan = replace(plan, targets=names)
    if args.buyers:
        plan = replace(plan, buyer_counts=tuple(int(n) for n in args.buyers.split(",")))

    if args.rounds:
        plan = replace(plan, rounds=max(1, args.rounds))
    if args.profile is not None:
        plan = replace(plan, profile_s=args.profile)

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"benchmark plan {plan.name}: N = {', '.join(map(str, plan.buyer_counts))}; "
        f"servers: {', '.join(plan.targets)}; {plan.rounds} alternating rounds")  # fmt: skip
    results = run_plan(plan, args.database_url, say, keep_workdir=args.keep_workdir)
    results["derived"] = derive(results)
    json_path, md_path = write_results(results, args.output, OUTPUT_NAMES[plan.name])
    print()
    print(md_path.read_text())
    derived = results["derived"]
    print(f"took {derived['rounds']} alternating rounds in {results['meta']['wall_s']} s; "
          "every figure above is their median [lowest..highest]")  # fmt: skip
    for warning in derived["warnings"]:
        print(f"WARNING: spread: {warning}")
    if results.get("charts_skipped"):
        print(f"charts skipped: {results['charts_skipped']}")
    shown = [str(args.output / name) for name in results["charts"]]
    print(f"results: {json_path} {md_path}" + (f"; charts: {' '.join(shown)}" if shown else ""))
    failed = [r["target"] for r in results["runs"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
