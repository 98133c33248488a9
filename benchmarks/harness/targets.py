"""The benchmark targets (speed, memory, import cost, throughput), evaluated from the section results: one row each (target, measured, met, load)."""

from __future__ import annotations

from typing import Any

from .common import md_table


def _row(target: str, measured: Any, met: bool | None, load: Any, note: str = "") -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": met, "load_1min": load, "note": note}


def _default_model_rows(default: dict[str, Any]) -> list[dict[str, Any]]:
    """Targets of the default model's inference results: grounding share of the latency, batch throughput, p50
    latency, import and `--help` cost, RSS growth."""
    load = default["load_1min"]
    share = default["split_batch1_ms"]["box_decoder_plus_grounding_pass_percent"]
    big = default["throughput"]["batch_large"]
    ratio = default["throughput"]["batch_large_over_batch1"]
    p50 = default["batch1"]["p50_ms"]
    cold = default["cold_start"]
    memory = default["memory"]
    growth = memory["rss_growth_percent"]
    return [
        _row("box decoder + grounding pass <= 5% of a report's latency", f"{share}%", share <= 5, load),
        _row(f"batch {big} throughput >= 1.5x batch 1", f"{ratio}x", ratio >= 1.5, load),
        _row("default model p50 <= 40 ms per report", f"{p50} ms", p50 <= 40, load),
        _row(
            "import medrg <= 2 s",
            f"{cold['import_medrg_s']} s",
            cold["import_medrg_s"] <= 2,
            cold["load_1min"],
        ),
        _row(
            "medrg --help <= 1 s",
            f"{cold['medrg_help_s']} s",
            cold["medrg_help_s"] <= 1,
            cold["load_1min"],
            f"bare python start {cold['python_bare_s']} s",
        ),
        _row(
            f"RSS growth < 5% over {memory['calls_long']} calls (vs {memory['calls_short']})",
            f"{growth}%",
            growth < 5,
            load,
        ),
    ]


def _findings_rows(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Targets of the scaling section's 1- and 10-finding reports, per decoding mode present in both: the latency
    ratio of 10 findings to 1, and one generation's speed-up over two-stage (both require all 10 grounded)."""
    by_count = {r["findings"]: r for r in findings}
    if 1 not in by_count or 10 not in by_count:
        return []
    one, ten = by_count[1], by_count[10]
    modes = (
        ("guided", "report-guided, the pipeline's default"),
        ("forced", "forced answer, all 10 grounded"),
        ("model", "model's own answer"),
    )
    rows = []
    for mode, label in modes:
        if mode not in ten or mode not in one:
            continue
        ratio = ten[mode]["one_generation_ms"] / one[mode]["one_generation_ms"]
        grounded = ten[mode]["one_generation_grounded"]
        rows.append(
            _row(
                f"10-finding report < 3x a 1-finding report ({label})",
                f"{ratio:.2f}x ({grounded}/10 grounded)",
                ratio < 3 and grounded == 10,
                ten["load_1min"],
            )
        )
        speedup = ten[mode]["two_stage_over_one"]
        rows.append(
            _row(
                f"10 findings: one generation >= 3x faster than two-stage ({label})",
                f"{speedup}x ({grounded} vs {ten[mode]['two_stage_grounded']} grounded)",
                speedup >= 3 and grounded == 10,
                ten["load_1min"],
            )
        )
    return rows


def _roofline_row(roofline: dict[str, Any]) -> dict[str, Any]:
    """The roofline target: achieved FLOP/s at the largest measured batch as a fraction of the matmul rate."""
    batch8 = roofline["rows"][-1]
    fraction = batch8["fraction_of_matmul"]
    return _row(
        f"achieved FLOP/s >= 20% of matmul at batch {batch8['batch']}",
        f"{100 * fraction:.3g}%",
        fraction >= 0.2,
        roofline["load_1min"],
        f"{batch8['achieved_gflops']} of {roofline['matmul']['median_gflops']} GFLOP/s",
    )


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for every target whose section ran; `met` is None where the measurement is missing."""
    rows = []
    inference = results.get("inference", {}).get("models", {})
    default = inference.get("default")
    if default:
        rows += _default_model_rows(default)
    small = inference.get("small")
    if small:
        p50 = small["batch1"]["p50_ms"]
        rows.append(_row("medrg-small p50 <= 1 s per report", f"{p50} ms", p50 <= 1000, small["load_1min"]))
    rows += _findings_rows(results.get("scaling", {}).get("findings", []))
    roofline = results.get("roofline")
    if roofline:
        rows.append(_roofline_row(roofline))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def met(value: bool | None) -> str:
        return "n/a" if value is None else ("yes" if value else "no")

    return md_table(
        ["target", "measured", "met", "load 1-min", "note"],
        [[r["target"], r["measured"], met(r["met"]), r["load_1min"], r["note"]] for r in rows],
    )
