"""Run every benchmark, one after another; keep their figures, a table and plots.

Each benchmark is a script of ``bench/`` that starts what it needs, runs, stops
it and prints one JSON line. This runs them as subprocesses at the issue's
sizes, then

- appends each JSON line to ``bench/results/results.jsonl`` with the time and
  the machine (CPUs, Python, redis-server version, load);
- writes ``bench/results/summary.md``: figure, ours, seed, ratio (above 1:
  ours is better), target, met;
- draws PNG plots (matplotlib): fan-out delivered/s and p99 against N for both
  systems, the worker publish rate, save to screen latency.

    make bench                                   # installs matplotlib, then this
    .venv/bin/python bench/run_all.py --only worker_rate --only save_to_screen
    .venv/bin/python bench/run_all.py --smoke    # every bench at tiny sizes; a temp dir

A benchmark that fails is recorded with its error and the rest still run; the
exit status says whether all succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
sys.path.insert(0, str(BASE_DIR))

from project.redis_server import find_redis_server  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"

# (script, arguments): the sizes. Scripts not written yet are skipped.
# "ours" is uvicorn; "ours on daphne" runs where the seed's server is worth comparing.
PROFILE_10K = RESULTS_DIR / "profile-fanout-10000.txt"
FANOUT_BIG = "--rate 1 --pushes 20 --system both --web-processes 2 --client-processes 4"
PLAN: list[tuple[str, list[str]]] = [
    # Latency under a load every system can carry, one server process each.
    ("fanout", shlex.split("--clients 1000 --rate 20 --pushes 200")),
    # Sustained delivery: more than any of them can carry, one process each; then ours on two.
    ("fanout", shlex.split("--clients 1000 --rate 80 --pushes 800")),
    (
        "fanout",
        shlex.split("--clients 1000 --rate 80 --pushes 800 --system ours --web-processes 2"),
    ),
    # One push a second to 5,000 and 10,000 sockets, two uvicorn processes.
    ("fanout", shlex.split(f"--clients 5000 {FANOUT_BIG}")),
    ("fanout", shlex.split(f"--clients 10000 {FANOUT_BIG} --profile {PROFILE_10K}")),
    ("many_topics", ["--system", "both"]),
    ("connect_storm", []),
    ("worker_rate", ["--pushes", "20000"]),
    # Redis CPU per push (ours and the seed), and 2,000 sockets on 3 processes over 2 shards.
    ("redis_capacity", []),
    ("save_to_screen", ["--saves", "500", "--rate", "50", "--coalesce-ms", "250"]),
    ("save_to_screen", ["--saves", "500", "--rate", "50", "--coalesce-ms", "50"]),
    ("save_to_dom", ["--saves", "200"]),
    ("chat_to_screen", ["--messages", "200"]),
    ("call_setup", ["--calls", "50", "--ice", "both"]),
    # 12 s faults: long enough for Chromium to call ICE disconnected and the page to restart it.
    ("call_recovery", shlex.split("--faults 20 --fault-s 12 --blips 20")),
]
SCRIPTS = list(dict.fromkeys(name for name, _ in PLAN))

# Figures shown for every benchmark that has them (besides those with a ratio or a target).
LATENCY_KEYS = ("p50_ms", "p99_ms", "max_ms")
# Shown for a run of ours alone, which has no ratios to pick figures by.
HEADLINE_KEYS = ("connected", "delivered_ratio", "delivered_per_s", "server_rss_kib_per_conn",
                 "server_cpu_us_per_frame", "web_processes", "recovered_rounds",
                 "restarted_rounds", "recovered_without_restart", "disturbed_rounds")  # fmt: skip


# Figures a benchmark nests in a dict of their own, shown as rows "<dict> <figure>":
# {bench: {dict: figures}}.
NESTED_FIGURES: dict[str, dict[str, tuple[str, ...]]] = {
    "call_setup": {"relay": (*LATENCY_KEYS, "not_relayed")},
    "call_recovery": {
        name: LATENCY_KEYS
        for name in ("fault_to_audio", "blip_to_in_call", "audio_gap_ms", "audio_gap_calm_ms")
    },
}


def lower_is_better(key: str) -> bool:
    return key.endswith(("_ms", "_s", "_kib", "_kib_per_conn", "_per_frame")) and not key.endswith(
        "per_s"
    )


# --- running ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures ran on (the box is shared: the load matters)."""
    try:
        redis_version = subprocess.run(
            [find_redis_server(), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except Exception as error:  # a missing binary is itself worth recording
        redis_version = f"unknown ({error})"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_server": redis_version,
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def run_one(name: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``bench/<name>.py args``; its JSON line, or a record of how it failed."""
    argv = [sys.executable, str(BENCH_DIR / f"{name}.py"), *args]
    print(f"[{time.strftime('%H:%M:%S')}] {name} {' '.join(args)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        # stderr (progress, server trouble) goes straight to ours; stdout carries the figures.
        done = subprocess.run(
            argv, cwd=BASE_DIR, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"bench": name, "error": f"timed out after {timeout:.0f} s"}
    result = last_json_line(done.stdout)
    if done.returncode != 0 or result is None:
        tail = done.stdout.strip().splitlines()[-3:]
        return {
            "bench": name,
            "error": f"exit status {done.returncode}, no JSON line" if result is None else
            f"exit status {done.returncode}",
            "stdout_tail": tail,
            **({"partial": result} if result else {}),
        }  # fmt: skip
    result.setdefault("bench", name)
    result["run_s"] = round(time.monotonic() - started, 1)
    return result


# --- the table ----------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _targets(record: Mapping[str, Any]) -> dict[str, Any]:
    """``target_<figure>`` keys and a ``targets`` dict, as {figure: target}."""
    found = {
        key[len("target_") :]: value for key, value in record.items() if key.startswith("target_")
    }
    if isinstance(record.get("targets"), Mapping):
        found.update(record["targets"])
    return found


def rows_of(label: str, record: Mapping[str, Any]) -> list[list[str]]:
    """The summary rows of one run: figure, ours, ours on daphne, seed, ratio, target, met."""
    if "error" in record:
        return [[label, f"failed: {record['error']}", "", "", "", "", ""]]
    ours = record.get("ours") if isinstance(record.get("ours"), Mapping) else record
    on_daphne = record.get("ours-daphne") if isinstance(record.get("ours-daphne"), Mapping) else {}
    seed = record.get("seed") if isinstance(record.get("seed"), Mapping) else None
    ratio = record.get("ratio")
    ratio_of = ratio if isinstance(ratio, Mapping) else {}
    targets = _targets(record)
    keys = [k for k in ratio_of if _number(ours.get(k)) or (seed and _number(seed.get(k)))]
    if not ratio_of:  # ours alone (another server count, say): its headline figures
        keys += [k for k in HEADLINE_KEYS if _number(ours.get(k))]
    keys += [k for k in targets if k not in keys]
    keys += [k for k in LATENCY_KEYS if k not in keys and _number(ours.get(k))]
    rows = []
    for key in keys:
        ours_value = ours.get(key)
        seed_value = seed.get(key) if seed else None
        target = targets.get(key)
        met: Any = None
        if _number(target) and _number(ours_value):
            met = ours_value < target if lower_is_better(key) else ours_value >= target
            target = f"< {_show(target)}" if lower_is_better(key) else f"≥ {_show(target)}"
        seed_cell = _show(seed_value)
        if seed is None and record.get("seed_reason"):
            seed_cell = "n/a (no such path in the seed)"
        rows.append(
            [f"{label}: {key}", _show(ours_value), _show(on_daphne.get(key)), seed_cell,
             _show(ratio_of.get(key)), _show(target), _show(met)]
        )  # fmt: skip
    for name, figures in NESTED_FIGURES.get(record.get("bench", ""), {}).items():
        nested = record.get(name)
        if isinstance(nested, Mapping):
            for key in figures:
                if _number(nested.get(key)):
                    rows.append([f"{label}: {name} {key}", _show(nested[key]), "", "", "", "", ""])
    # Extra variants of ours (worker_rate's publish tasks): their rates.
    for name, extra in record.items():
        if name.startswith("ours_") and isinstance(extra, Mapping):
            for key, value in extra.items():
                if key.endswith("per_s") and _number(value):
                    rows.append([f"{label}: {name} {key}", _show(value), "", "", "", "", ""])
    return rows


def write_summary(
    path: Path, runs: Iterable[tuple[str, Sequence[str], Mapping[str, Any]]], facts: Mapping
) -> None:
    lines = [
        "# Benchmark summary",
        "",
        f"Run at {facts['timestamp']} on {facts['cpus']} CPUs, Python {facts['python']}, "
        f"{facts['redis_server'].split(' sha=')[0]}, load before {facts['loadavg']}.",
        "",
        'Ours runs on uvicorn (the default); "ours on daphne" is the same project on the '
        "seed's server, where a benchmark ran it. Ratio: above 1 means ours is better "
        "(ours/seed for rates, seed/ours for times and "
        "memory). Every figure comes from the same run, ours and the seed's setup as written "
        "(`bench/reference/`) one after the other.",
        "",
        "| figure | ours (uvicorn) | ours on daphne | seed | ratio ours/seed | target | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, args, record in runs:
        label = " ".join([name, *args])
        for row in rows_of(label, record):
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        if record.get("note"):
            notes.append(f"- {label}: {record['note']}")
        if record.get("seed_reason"):
            notes.append(f"- {label}: seed n/a: {record['seed_reason']}")
    if notes:
        lines += ["", "Notes:", "", *dict.fromkeys(notes)]
    path.write_text("\n".join(lines) + "\n")


# --- the plots ----------------------------------------------------------------------------


def write_plots(directory: Path, records: Sequence[Mapping[str, Any]]) -> list[Path]:
    """PNG plots of this run's figures; none if matplotlib is missing (``make bench`` has it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[bench]')", file=sys.stderr)
        return []
    written = []

    fanouts = sorted(
        (r for r in records if r.get("bench") == "fanout" and "error" not in r),
        key=lambda r: r.get("clients", 0),
    )
    if fanouts:
        figure, (rate_axis, p99_axis) = plt.subplots(1, 2, figsize=(11, 4))
        for system, style in (("ours", "o-"), ("ours-daphne", "^:"), ("seed", "s--")):
            points = [
                (r["clients"], r[system])
                for r in fanouts
                if isinstance(r.get(system), Mapping) and r.get("rate", 0) <= 20
            ]
            if not points:
                continue
            xs = [n for n, _ in points]
            rate_axis.plot(
                xs, [f.get("delivered_per_s") or 0 for _, f in points], style, label=system
            )
            p99_axis.plot(xs, [f.get("p99_ms") or 0 for _, f in points], style, label=system)
        rate_axis.set(title="Fan-out: frames delivered per second", xlabel="clients (N)",
                      ylabel="delivered/s")  # fmt: skip
        p99_axis.set(title="Fan-out: push to client p99", xlabel="clients (N)", ylabel="ms")
        for axis in (rate_axis, p99_axis):
            axis.grid(alpha=0.3)
            axis.legend()
        figure.tight_layout()
        written.append(_save(figure, directory / "fanout.png", plt))

    rates = [r for r in records if r.get("bench") == "worker_rate" and "error" not in r]
    if rates:
        record = rates[-1]
        bars = [("ours push()", record["ours"]["pushes_per_s"], "tab:blue")]
        if "ours_many" in record:
            bars.append(("ours push_many", record["ours_many"]["pushes_per_s"], "tab:purple"))
        bars.append(("seed async_to_sync", record["seed"]["pushes_per_s"], "tab:orange"))
        if "ours_publish_task" in record:
            tasks = record["ours_publish_task"]["tasks_per_s"]
            bars.append(("ours publish tasks", tasks, "tab:green"))
        figure, axis = plt.subplots(figsize=(7, 4))
        axis.bar([name for name, _, _ in bars], [value for _, value, _ in bars],
                 color=[colour for _, _, colour in bars])  # fmt: skip
        target = record.get("target_pushes_per_s")
        if target:
            axis.axhline(target, color="grey", linestyle=":", label=f"target {target}/s")
            axis.legend()
        axis.set(title="Pushes per second, one Celery worker process", ylabel="per second")
        axis.set_yscale("log")
        figure.tight_layout()
        written.append(_save(figure, directory / "worker_rate.png", plt))

    screens = [r for r in records if r.get("bench") == "save_to_screen" and "error" not in r]
    if screens:
        figure, axis = plt.subplots(figsize=(6, 4))
        labels = [f"coalesce {r['ours']['coalesce_ms']} ms" for r in screens]
        width = 0.35
        xs = range(len(screens))
        axis.bar([x - width / 2 for x in xs], [r["ours"]["p50_ms"] for r in screens], width,
                 label="p50")  # fmt: skip
        axis.bar([x + width / 2 for x in xs], [r["ours"]["p99_ms"] for r in screens], width,
                 label="p99")  # fmt: skip
        axis.set_xticks(list(xs), labels)
        axis.axhline(100, color="grey", linestyle=":", label="target p99 100 ms")
        axis.set(title="save() to client receipt (ours; the seed has no such path)", ylabel="ms")
        axis.legend()
        figure.tight_layout()
        written.append(_save(figure, directory / "save_to_screen.png", plt))
    return written


def _save(figure: Any, path: Path, plt: Any) -> Path:
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="every bench once with --smoke; results in a temp dir")  # fmt: skip
    parser.add_argument("--only", action="append", choices=SCRIPTS, help="run only these")
    parser.add_argument("--results", type=Path, help="where to write (default bench/results)")
    parser.add_argument("--timeout", type=float, help="per benchmark, seconds")
    options = parser.parse_args()

    if options.smoke:
        plan = [(name, ["--smoke"]) for name in SCRIPTS]
        results = options.results or Path(tempfile.mkdtemp(prefix="bench-smoke-"))
        timeout = options.timeout or 300
    else:
        plan = PLAN
        results = options.results or RESULTS_DIR
        timeout = options.timeout or 3600
    plan = [(name, args) for name, args in plan if not options.only or name in options.only]
    results.mkdir(parents=True, exist_ok=True)

    facts = {"timestamp": datetime.now(UTC).isoformat(timespec="seconds"), **machine()}
    runs: list[tuple[str, list[str], dict[str, Any]]] = []
    for name, args in plan:
        if not (BENCH_DIR / f"{name}.py").exists():
            print(f"skipped {name}: bench/{name}.py does not exist yet", file=sys.stderr)
            continue
        record = run_one(name, args, timeout)
        runs.append((name, args, record))
        with open(results / "results.jsonl", "a") as log:
            line = {"timestamp": facts["timestamp"], "machine": facts, "args": args,
                    "result": record}  # fmt: skip
            log.write(json.dumps(line) + "\n")

    write_summary(results / "summary.md", runs, facts)
    plots = write_plots(results, [record for _, _, record in runs])
    print((results / "summary.md").read_text())
    print(f"results: {results / 'results.jsonl'}; summary: {results / 'summary.md'}; "
          f"plots: {', '.join(p.name for p in plots) or 'none'}")  # fmt: skip
    failed = [name for name, _, record in runs if "error" in record]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
