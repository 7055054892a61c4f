"""The evaluation report: markdown tables and the whole ``evaluation.md``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adascale_ros.load.stress import LOAD_SESSIONS


def _cell(value: float, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and math.isfinite(value) else "n/a"


def markdown_table(metrics: Mapping[str, Mapping[str, Any]], variants: Mapping[str, str]) -> str:
    header = (
        "| policy | variant | frames | accuracy | mean ms | p50 ms | p95 ms | p99 ms | deadline misses "
        "| dropped | switches/min | energy mJ/frame |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [header]
    for name, m in metrics.items():
        rows.append(
            f"| {name} | {variants.get(name, 'adaptive')} | {m['frames']} | {_cell(m['accuracy'], '.1%')} "
            f"| {_cell(m['latency_mean_ms'], '.2f')} | {_cell(m['latency_p50_ms'], '.2f')} "
            f"| {_cell(m['latency_p95_ms'], '.2f')} | {_cell(m['latency_p99_ms'], '.2f')} "
            f"| {_cell(m['deadline_miss_rate'], '.1%')} | {m['dropped']} | {_cell(m['switches_per_min'], '.1f')} "
            f"| {_cell(m['energy_mj_per_frame'], '.2f')} |"
        )
    return "\n".join(rows)


def results_table(report: Mapping[str, Any], source: Path | str) -> str:
    """The README's results: the pooled table of a saved report, what it was measured on, its targets."""
    config = report["config"]
    runs = config.get("repeats", 1)
    lines = [
        f"Trace `{config['trace']}`, {runs} run{'s' if runs > 1 else ''} per policy pooled, deadline"
        f" {budget_text(config)} ({config.get('budget_source', 'given')});"
        f" {LOAD_SESSIONS[config.get('load_session', 'own')]}; from `{source}`.",
        "",
        markdown_table(report["policies"], report["variants"]),
        "",
        *(f"- [{'x' if t['passed'] else ' '}] {target_line(t)}" for t in report["targets"]),
    ]
    return "\n".join(lines)


def target_line(target: Mapping[str, Any]) -> str:
    """One target's result, pooled, and in how many repeats it was met."""
    line = f"{target['name']}: {target['measured']}"
    if target.get("runs", 1) > 1:
        line += f" (met in {target['met_in_runs']} of {target['runs']} runs)"
    return line


def repeats_table(repeats: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy, mean latency and deadline misses of each policy in each repeat, side by side."""
    rows = ["| policy | accuracy per run | mean ms per run | deadline misses per run |", "|---|---|---|---|"]
    for name in repeats[0]["policies"]:
        runs = [r["policies"][name] for r in repeats if name in r["policies"]]
        rows.append(
            f"| {name} | {' / '.join(_cell(m['accuracy'], '.1%') for m in runs)} "
            f"| {' / '.join(_cell(m['latency_mean_ms'], '.2f') for m in runs)} "
            f"| {' / '.join(_cell(m['deadline_miss_rate'], '.1%') for m in runs)} |"
        )
    return "\n".join(rows)


def phases_table(phases: Mapping[str, Mapping[str, Mapping[str, Any]]], describe: Sequence[str]) -> str:
    """Mean latency and deadline misses of each policy in each phase of the trace."""
    header = "| policy | " + " | ".join(f"phase {i}: {d}" for i, d in enumerate(describe)) + " |"
    rows = [header, "|---|" + "---:|" * len(describe)]
    for name, by_phase in phases.items():
        cells = []
        for i in range(len(describe)):
            m = by_phase.get(str(i))
            cells.append(
                f"{_cell(m['latency_mean_ms'], '.2f')} ms, {_cell(m['deadline_miss_rate'], '.0%')} missed" if m else "-"
            )
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def adaptation_table(report: Mapping[str, Any]) -> str:
    """Accuracy and misses over the idle and the loaded phases, and how fast each policy moved off the
    top-accuracy variants at a load step and back on after it (every step of every run)."""

    def seconds(values: Sequence[float]) -> str:
        return ", ".join("never" if math.isnan(t) else f"{t:.1f}" for t in values) or "-"

    rows = [
        "| policy | idle: accuracy | idle: misses | loaded: accuracy | loaded: misses | downgrade after a load step [s]"
        " | back to top accuracy after it [s] |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, idle in report["idle_phases"].items():
        loaded, times = report["loaded_phases"][name], report["adaptation_s"][name]
        rows.append(
            f"| {name} | {_cell(idle['accuracy'], '.1%')} | {_cell(idle['deadline_miss_rate'], '.1%')} "
            f"| {_cell(loaded['accuracy'], '.1%')} | {_cell(loaded['deadline_miss_rate'], '.1%')} "
            f"| {seconds(times['downgrade_s'])} | {seconds(times['back_to_top_s'])} |"
        )
    return "\n".join(rows)


def node_cpu_table(node_cpu: Mapping[str, Mapping[str, float]]) -> str:
    """Percent of one core each policy's nodes used while frames flowed, and their sum."""
    names = sorted({name for nodes in node_cpu.values() for name in nodes})
    rows = ["| policy | " + " | ".join(names) + " | all nodes |", "|---|" + "---:|" * (len(names) + 1)]
    for policy, nodes in node_cpu.items():
        cells = [_cell(100 * nodes[n], ".1f") if n in nodes else "-" for n in names]
        rows.append(f"| {policy} | " + " | ".join(cells) + f" | {_cell(100 * sum(nodes.values()), '.1f')} |")
    return "\n".join(rows)


def budget_text(config: Mapping[str, Any]) -> str:
    """ "1.2 ms", or one budget per round: "1.6 / 1.4 / 1.5 ms (one per round)"."""
    budgets = config.get("budgets_ms") or [config["budget_ms"]]
    if len(set(budgets)) == 1:
        return f"{budgets[0]:g} ms"
    return " / ".join(f"{b:g}" for b in budgets) + " ms (one per round)"


def markdown_report(report: Mapping[str, Any]) -> str:
    config = report["config"]
    repeats = config.get("repeats", 1)
    pooled = f", {repeats} runs per policy, interleaved; the table pools them" if repeats > 1 else ""
    lines = [
        "# Evaluation",
        "",
        f"Bag `{config['bag']}`, trace `{config['trace']}` ({config['duration_s']:g} s per policy{pooled}), "
        f"latency budget {budget_text(config)}, model `{config['model_dir']}`; accuracy is against "
        + config.get("accuracy_against", "the bag's labels")
        + f"; {LOAD_SESSIONS[config.get('load_session', 'own')]}.",
        "",
        f"The deadline was fixed before any run: {config.get('budget_source', 'given')}. The comparison rests"
        " on a premise, checked below: static-top (what one would deploy without adaptation) meets that"
        " deadline while the robot is idle and misses it under the trace's load.",
        "",
        markdown_table(report["policies"], report["variants"]),
        "",
        *([f"static-mid runs {config['static_mid']}.", ""] if config.get("static_mid") else []),
    ]
    for policy, settings in config.get("arms", {}).items():
        lines += [f"{policy} is adascale with " + ", ".join(f"`{setting}`" for setting in settings) + ".", ""]
    if report["targets"]:
        lines += ["## Targets", ""]
        lines += [f"- [{'x' if t['passed'] else ' '}] {target_line(t)}" for t in report["targets"]]
        lines.append("")
    if report.get("idle_phases"):
        lines += ["## Idle and loaded phases", "", adaptation_table(report), ""]
    if repeats > 1:
        lines += ["## Each run", "", repeats_table(report["repeats"]), ""]
    if report.get("phases"):
        lines += ["## By trace phase", "", phases_table(report["phases"], config["trace_phases"]), ""]
    if any(report.get("node_cpu", {}).values()):
        measured = {p: nodes for p, nodes in report["node_cpu"].items() if nodes}
        lines += ["## CPU of the nodes (% of one core)", "", node_cpu_table(measured), ""]
    lines += [
        "Deadline misses count results slower than the budget and dropped frames. Energy is the profiler's",
        "eq. 3 estimate for the path that ran (to its early exit, if it took one), at the resource state of"
        " the moment; early exits are in the JSON report."
        + (" The timeline shows the first run of each policy." if repeats > 1 else ""),
        "",
        "![timeline](timeline.png)",
        "",
        "![accuracy vs latency](accuracy_latency.png)",
        "",
    ]
    return "\n".join(lines)
