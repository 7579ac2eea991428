"""PNG plots of time (and peak memory) against dataset size, one per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench_lib.targets import SCENARIOS

# Series of a figure that hold a time summary, with their legend text and style.
SERIES = (
    ("localsync", "localsync", "o-"),
    ("reference", "reference", "s--"),
    ("http", "same query over HTTP", "^-."),
    ("command", "localsync sync (CLI process)", "v:"),
)


def write_plots(results: dict[str, Any], assets: Path) -> dict[str, Path]:
    """Write a plot for each scenario measured at a dataset size; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    for key, scenario in SCENARIOS.items():
        figures = sorted(
            (f for f in results["figures"] if f["scenario"] == key and f["size"] > 0),
            key=lambda f: f["size"],
        )
        if not figures:
            continue
        memory = any("peak_mb" in f for f in figures)
        fig, panels = plt.subplots(
            1, 2 if memory else 1, figsize=(10 if memory else 6, 4)
        )
        time_axes = panels[0] if memory else panels
        _plot_times(time_axes, figures, scenario)
        if memory:
            _plot_memory(panels[1], figures, scenario)
        fig.tight_layout()
        path = assets / f"{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        plots[key] = path
    return plots


def _plot_times(axes: Any, figures: list[dict[str, Any]], scenario: Any) -> None:
    for series, label, style in SERIES:
        points = [f for f in figures if series in f]
        if not points:
            continue
        sizes = [f["size"] for f in points]
        medians = [f[series]["median"] for f in points]
        low = [m - f[series]["min"] for m, f in zip(medians, points, strict=True)]
        high = [f[series]["max"] - m for m, f in zip(medians, points, strict=True)]
        axes.errorbar(
            sizes, medians, yerr=[low, high], fmt=style, capsize=3, label=label
        )
    for target in scenario.targets:
        if target.value == "seconds":
            axes.axhline(
                target.limit,
                color="grey",
                linestyle=":",
                label=f"target: {target.text}",
            )
    _decorate(axes, scenario.title, "seconds (median, min..max)")


def _plot_memory(axes: Any, figures: list[dict[str, Any]], scenario: Any) -> None:
    sizes = [f["size"] for f in figures if "peak_mb" in f]
    peaks = [f["peak_mb"] for f in figures if "peak_mb" in f]
    axes.plot(sizes, peaks, "o-", label="peak RSS of the clone process")
    for target in scenario.targets:
        if target.value == "peak_mb":
            axes.axhline(
                target.limit,
                color="grey",
                linestyle=":",
                label=f"target: {target.text}",
            )
    axes.set_ylim(bottom=0)
    _decorate(axes, f"{scenario.title}: peak memory", "MB (max over runs)", log_y=False)


def _decorate(axes: Any, title: str, ylabel: str, *, log_y: bool = True) -> None:
    axes.set_xscale("log")
    if log_y:
        axes.set_yscale("log")
    axes.set_xlabel("dataset items")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize="medium")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
