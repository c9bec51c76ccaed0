"""Draw a Grafana dashboard's panels from in-memory scrapes with matplotlib, laid out by each panel's
gridPos on Grafana's 24-column grid, into one PNG (deploy/grafana/render.py records the scrapes)."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend
from matplotlib.ticker import FuncFormatter, PercentFormatter
from PIL import Image

from deploy.grafana.promql import Evaluator, Labels, PromQLError, Scrape, format_legend, parse

VARIABLES = {"route": ".*", "__rate_interval": "5s"}  # All routes; 5 s = several 1 s scrapes per window
MAX_NAMED = 6  # series beyond this are drawn thin and grey, the largest ones keep their names
UNIT_H_IN = 0.36  # inches per Grafana grid row
WIDTH_IN = 22.0
STATUS = {-1: ("insufficient_data", "#8ab8ff"), 0: ("stable", "#73bf69"), 1: ("moderate", "#ff9830"),
          2: ("significant", "#f2495c")}
METRIC = re.compile(r"\bgateway_[a-z0-9_]+")
Series = tuple[str, list[float], list[float]]  # legend, x (s since start), y


def panel_series(panel: dict[str, Any], evaluator: Evaluator, t0: float) -> list[Series]:
    """Each target's series on the common time axis (every scrape), NaN where a series has no value."""
    xs = [t - t0 for t in evaluator.times]
    out: list[Series] = []
    for target in panel.get("targets", []):
        node = parse(target["expr"], VARIABLES)
        for labels, points in sorted(evaluator.range(node).items()):
            values = {t: v for t, v in points}
            ys = [values.get(t, math.nan) for t in evaluator.times]
            ys = [y if math.isfinite(y) else math.nan for y in ys]
            if any(not math.isnan(y) for y in ys):
                out.append((_legend(target, labels), xs, ys))
    return out


def _legend(target: dict[str, Any], labels: Labels) -> str:
    return format_legend(target.get("legendFormat", ""), labels) or target.get("refId", "")


def _peak(series: Series) -> float:
    return max((y for y in series[2] if not math.isnan(y)), default=0.0)


def _unit_axis(ax: Axes, unit: str, scale_ms: bool) -> None:
    if unit == "percentunit":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    elif unit == "s" and scale_ms:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 1000:g} ms"))
    elif unit == "s":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} s"))
    elif unit == "reqps":
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}/s"))


def draw_timeseries(ax: Axes, panel: dict[str, Any], series: list[Series], events: Sequence[tuple[float, str]]) -> None:
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    custom = defaults.get("custom", {})
    unit = defaults.get("unit", "short")
    for i, (t, _) in enumerate(events):
        ax.axvline(t, color="#999999", lw=0.6, ls=":", zorder=0)
        ax.text(t, 0.99, chr(ord("A") + i), transform=ax.get_xaxis_transform(), fontsize=7, color="#666666",
                ha="left", va="top")
    if not series:
        names = sorted({n for t in panel.get("targets", []) for n in METRIC.findall(t["expr"])})
        ax.text(0.5, 0.5, "No data\n(" + ", ".join(names) + " not in the scrapes)", transform=ax.transAxes,
                ha="center", va="center", fontsize=10, color="#888888")
        return
    if custom.get("stacking", {}).get("mode") == "normal":
        stacked = [[y if not math.isnan(y) else 0.0 for y in s[2]] for s in series]
        ax.stackplot(series[0][1], stacked, labels=[s[0] for s in series], alpha=0.6)
    else:
        ranked = sorted(range(len(series)), key=lambda i: _peak(series[i]), reverse=True)
        named = set(ranked if len(ranked) <= MAX_NAMED + 1 else ranked[:MAX_NAMED])
        for i, (legend, xs, ys) in enumerate(series):
            if i in named:
                ax.plot(xs, ys, lw=1.4, label=legend)
            else:
                ax.plot(xs, ys, lw=0.6, color="#bbbbbb", zorder=1)
        if len(named) < len(series):
            ax.plot([], [], lw=0.6, color="#bbbbbb", label=f"{len(series) - len(named)} more (lower peaks)")
    peak = max(_peak(s) for s in series)
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step.get("value") is not None and custom.get("thresholdsStyle", {}).get("mode", "off") != "off" \
                and step["value"] <= 1.5 * max(peak, 1e-12):
            ax.axhline(step["value"], color=step["color"], lw=1.0, ls="--", zorder=0)
    if "max" in defaults:
        ax.set_ylim(top=defaults["max"] * 1.02)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    _unit_axis(ax, unit, scale_ms=peak < 1.0)
    ax.legend(fontsize=8, loc="upper left", framealpha=0.7, ncol=1 if len(series) < 5 else 2, handlelength=1.2)


def draw_status_table(ax: Axes, panel: dict[str, Any], series: list[Series], rows: int) -> None:
    ax.axis("off")
    if not series:
        ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center", fontsize=11, color="#888888")
        return
    last = sorted(((int(s[2][-1]) if not math.isnan(s[2][-1]) else -1, s[0]) for s in series),
                  key=lambda item: (-item[0], item[1]))
    shown = last[: rows - 1] if len(last) > rows else last
    cells = [[name, STATUS.get(code, (str(code), "#ffffff"))[0]] for code, name in shown]
    colours = [["#ffffff", STATUS.get(code, ("", "#ffffff"))[1]] for code, _ in shown]
    if len(shown) < len(last):
        rest = last[len(shown):]
        counts = {STATUS.get(c, (str(c), ""))[0]: sum(1 for code, _ in rest if code == c) for c, _ in rest}
        cells.append([f"... {len(rest)} more", ", ".join(f"{n} {k}" for k, n in counts.items())])
        colours.append(["#ffffff", "#ffffff"])
    table = ax.table(cellText=cells, cellColours=colours, colLabels=["feature (route, version)", "status (last window)"],
                     loc="upper center", cellLoc="left", colWidths=[0.6, 0.4])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.15)


def plot_dashboard(dashboard: dict[str, Any], scrapes: Sequence[Scrape], events: Sequence[tuple[float, str]],
                   out: Path, *, dpi: int = 60) -> None:
    """Every panel of `dashboard` evaluated over `scrapes` and drawn at its gridPos; `events` (Unix time,
    label) become lettered vertical markers, explained under the title."""
    if not scrapes:
        raise ValueError("no scrapes to plot")
    t0 = scrapes[0].t
    evaluator = Evaluator(scrapes)
    marks = [(t - t0, label) for t, label in events]
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    header_in = 0.75
    fig_h = header_in + rows * UNIT_H_IN + 0.1
    fig = Figure(figsize=(WIDTH_IN, fig_h))
    col_in = (WIDTH_IN - 0.2) / 24

    def rect(g: dict[str, int], pad: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Figure coordinates of a grid box, inset by (left, right, top, bottom) inches."""
        left = 0.1 + g["x"] * col_in + pad[0]
        top = header_in + g["y"] * UNIT_H_IN + pad[2]
        width = g["w"] * col_in - pad[0] - pad[1]
        height = g["h"] * UNIT_H_IN - pad[2] - pad[3]
        return (left / WIDTH_IN, 1 - (top + height) / fig_h, width / WIDTH_IN, height / fig_h)

    span = scrapes[-1].t - t0
    fig.text(0.1 / WIDTH_IN, 1 - 0.12 / fig_h, f"{dashboard['title']}: {len(scrapes)} scrapes of /metrics, 1 s apart "
             f"({span:.0f} s), from a live `gateway serve --demo` driven by python -m deploy.grafana.render",
             fontsize=14, weight="bold", va="top")
    legend = "   ".join(f"{chr(ord('A') + i)} {t:.0f} s {label}" for i, (t, label) in enumerate(marks))
    fig.text(0.1 / WIDTH_IN, 1 - 0.45 / fig_h, f"x: seconds since the first scrape.  Events: {legend}",
             fontsize=10, va="top", color="#333333")
    for panel in panels:
        g = panel["gridPos"]
        if panel["type"] == "row":
            ax = fig.add_axes(rect(g, (0.0, 0.0, 0.0, 0.0)))
            ax.axis("off")
            ax.axhline(0.1, color="#444444", lw=0.8)
            ax.text(0, 0.2, panel["title"], fontsize=12.5, weight="bold", va="bottom")
            continue
        ax = fig.add_axes(rect(g, (0.62, 0.12, 0.3, 0.32)))
        ax.set_title(panel["title"], fontsize=10.5, loc="left", pad=3)
        try:
            series = panel_series(panel, evaluator, t0)
        except PromQLError as exc:
            ax.text(0.5, 0.5, f"not rendered: {exc}", transform=ax.transAxes, ha="center", fontsize=8)
            continue
        if panel["type"] == "table":
            draw_status_table(ax, panel, series, rows=int(g["h"] * 1.3) - 1)
        else:
            draw_timeseries(ax, panel, series, marks)
            ax.tick_params(labelsize=8, pad=1.5)
            ax.grid(alpha=0.25)
            ax.set_xlim(0, span)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi)
    # A palette PNG: a chart has few colours, and this keeps the committed file small.
    Image.open(buffer).convert("RGB").quantize(colors=96, dither=Image.Dither.NONE).save(out, optimize=True)
