#!/usr/bin/env python3
"""Render the fleet's Grafana dashboard as one SVG file, from a live Prometheus: no Grafana needed.

    python3 tools/dashboard_render.py --prometheus http://MONITORING-HOST:9090 \\
        [--dashboard roles/monitoring/files/fleet-dashboard.json] [--range 1h] [--step 30s] \\
        [--rate-interval 1m] [--end UNIX-TIME] --out dashboard.svg

Each panel's queries are asked over the range (Prometheus' /api/v1/query_range, with Grafana's
$__rate_interval replaced by --rate-interval) and drawn in the dashboard's order as a grid of small charts:
title, value axis in the panel's unit, UTC time axis, one line per series and a legend. Table panels
(the gateway servers' state, the workstations' smoke results) are drawn as lists of each series' last value.
The drawing is a pure function of the answers (render_svg), unit-tested against a recorded answer.

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DASHBOARD = REPO / "roles" / "monitoring" / "files" / "fleet-dashboard.json"

COLUMNS = 3
CELL_WIDTH, CELL_HEIGHT = 440, 290
PLOT_LEFT, PLOT_TOP, PLOT_WIDTH, PLOT_HEIGHT = 76, 34, 346, 150
LEGEND_ROWS = 5
HEADER = 48
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f")

UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001))
DURATION = re.compile("".join(rf"(?:(?P<{'ms_' if unit == 'ms' else unit}>[0-9]+){unit})?" for unit, _ in UNITS))
RATE_INTERVAL = re.compile(r"\$(?:__rate_interval\b|\{__rate_interval\})")
LEGEND_LABEL = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def duration_seconds(text: str) -> float:
    """A Prometheus duration (30s, 5m, 1h30m) as seconds; ValueError for anything else."""
    match = DURATION.fullmatch(str(text).strip())
    if not match or not any(match.groupdict().values()):
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 1h")
    return sum(int(match.group("ms_" if unit == "ms" else unit) or 0) * factor for unit, factor in UNITS)


# ------------------------------------------------------------------------------ dashboard and Prometheus
def panel_queries(dashboard: dict, rate_interval: str = "1m") -> list[dict]:
    """[{title, type, unit, targets: [{expr, legend}]}] of the panels that query, in the dashboard's order."""
    panels = []

    def walk(items):
        for panel in items or []:
            targets = [{"expr": RATE_INTERVAL.sub(rate_interval, target["expr"]),
                        "legend": target.get("legendFormat") or ""}
                       for target in panel.get("targets") or [] if target.get("expr")]
            if targets:
                defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
                panels.append({"title": panel.get("title", ""), "type": panel.get("type", "timeseries"),
                               "unit": defaults.get("unit") or "short", "mappings": value_mappings(defaults),
                               "targets": targets})
            walk(panel.get("panels"))

    walk(dashboard.get("panels"))
    return panels


def value_mappings(defaults: dict) -> dict:
    """Grafana's value mappings of a panel: {value as text: (text, colour)}."""
    mapped = {}
    for mapping in defaults.get("mappings") or []:
        if mapping.get("type") == "value":
            for value, result in (mapping.get("options") or {}).items():
                mapped[str(value)] = (str(result.get("text", value)), result.get("color") or "")
    return mapped


def query_range(prometheus: str, expr: str, start: float, end: float, step: float, timeout: float = 30) -> dict:
    """Prometheus' answer to /api/v1/query_range (the whole JSON document)."""
    query = urllib.parse.urlencode({"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
    with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/query_range?{query}", timeout=timeout) as answer:
        return json.load(answer)


def series_name(metric: dict, legend: str) -> str:
    if legend:
        return LEGEND_LABEL.sub(lambda match: str(metric.get(match.group(1), "")), legend).strip() or "-"
    labels = ", ".join(f'{key}="{value}"' for key, value in sorted(metric.items()) if key != "__name__")
    return f"{metric.get('__name__', '')}{{{labels}}}"


def series_of(answer: dict, legend: str) -> list[dict]:
    """[{name, points: [(time, value)]}] from a query_range answer; NaN and infinite values are left out."""
    if answer.get("status") != "success":
        raise ValueError(f"Prometheus answered {answer.get('errorType')}: {answer.get('error')}")
    series = []
    for item in answer["data"]["result"]:
        points = []
        for stamp, text in item.get("values") or ([item["value"]] if "value" in item else []):
            value = float(text)
            if math.isfinite(value):
                points.append((float(stamp), value))
        series.append({"name": series_name(item.get("metric", {}), legend), "points": points})
    return series


def collect(prometheus: str, dashboard: dict, start: float, end: float, step: float, rate_interval: str) -> list[dict]:
    """Each panel with its series: [{title, type, unit, series, error}]."""
    panels = []
    for panel in panel_queries(dashboard, rate_interval):
        series, error = [], ""
        for target in panel["targets"]:
            try:
                series += series_of(query_range(prometheus, target["expr"], start, end, step), target["legend"])
            except (OSError, ValueError) as exc:
                error = str(exc)
        panels.append(dict(panel, series=series, error=error))
    return panels


# ------------------------------------------------------------------------------ drawing (pure)
def format_value(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    if unit == "s":
        if value and abs(value) < 1:
            return f"{value * 1000:.3g}ms"
        return f"{value:.3g}s"
    suffix = {"reqps": " req/s"}.get(unit, "")
    magnitude = abs(value)
    for limit, letter in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{letter}{suffix}"
    return f"{value:.3g}{suffix}"


def format_time(stamp: float) -> str:
    return time.strftime("%H:%M", time.gmtime(stamp))


def _text(x: float, y: float, content: str, size: int = 11, anchor: str = "start", weight: str = "normal",
          fill: str = "#222") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" font-weight="{weight}" '
            f'fill="{fill}">{escape(content)}</text>')


def _value_range(series: list[dict], unit: str) -> tuple[float, float]:
    values = [value for item in series for _, value in item["points"]]
    low, high = min(values), max(values)
    low = min(low, 0.0)
    if unit == "percentunit":
        high = max(high, 1.0) if high > 0.5 else max(high, 0.0)
    if high <= low:
        high = low + 1.0
    return low, high


def _chart(panel: dict, start: float, end: float) -> list[str]:
    parts = []
    series = [item for item in panel["series"] if item["points"]]
    left, top, width, height = PLOT_LEFT, PLOT_TOP, PLOT_WIDTH, PLOT_HEIGHT
    parts.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>')
    span = max(end - start, 1e-9)
    for fraction in (0.0, 0.5, 1.0):
        x = left + fraction * width
        parts.append(f'<line x1="{x:.1f}" y1="{top + height}" x2="{x:.1f}" y2="{top + height + 4}" stroke="#888"/>')
        parts.append(_text(x, top + height + 16, format_time(start + fraction * span), 10, "middle", fill="#555"))
    if not series:
        parts.append(_text(left + width / 2, top + height / 2, panel.get("error") or "No data", 12, "middle",
                           fill="#999"))
        return parts
    low, high = _value_range(series, panel["unit"])
    for fraction in (0.0, 0.5, 1.0):
        y = top + height - fraction * height
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#e4e4e4"/>')
        parts.append(_text(left - 6, y + 4, format_value(low + fraction * (high - low), panel["unit"]), 10, "end",
                           fill="#555"))
    for index, item in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        coordinates = []
        for stamp, value in item["points"]:
            x = left + (min(max(stamp, start), end) - start) / span * width
            y = top + height - (value - low) / (high - low) * height
            coordinates.append(f"{x:.1f},{y:.1f}")
        if len(coordinates) == 1:
            x, y = coordinates[0].split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(coordinates)}"/>')
    for index, item in enumerate(series[:LEGEND_ROWS]):
        y = top + height + 32 + index * 14
        color = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{left}" y="{y - 8}" width="10" height="3" fill="{color}"/>')
        last = item["points"][-1][1]
        parts.append(_text(left + 16, y, f"{item['name']}  (last {format_value(last, panel['unit'])})", 10))
    if len(series) > LEGEND_ROWS:
        parts.append(_text(left + 16, top + height + 32 + LEGEND_ROWS * 14, f"+{len(series) - LEGEND_ROWS} more",
                           10, fill="#777"))
    return parts


def _table(panel: dict) -> list[str]:
    """The series current at the range's end (as Grafana's instant query shows them), with their last value."""
    parts = []
    rows = [item for item in panel["series"] if item["points"]]
    latest = max((item["points"][-1][0] for item in rows), default=0)
    rows = [item for item in rows if item["points"][-1][0] == latest]
    if not rows:
        return [_text(CELL_WIDTH / 2, PLOT_TOP + PLOT_HEIGHT / 2, panel.get("error") or "No data", 12, "middle",
                      fill="#999")]
    limit = 14
    for index, item in enumerate(rows[:limit]):
        y = PLOT_TOP + 14 + index * 16
        value = item["points"][-1][1]
        text, color = (panel.get("mappings") or {}).get(f"{value:g}", (format_value(value, panel["unit"]), ""))
        colors = {"red": "#c62828", "green": "#2e7d32"}
        parts.append(_text(20, y, item["name"], 11))
        parts.append(_text(CELL_WIDTH - 20, y, text, 11, "end", "bold", colors.get(color, color or "#222")))
    if len(rows) > limit:
        parts.append(_text(20, PLOT_TOP + 14 + limit * 16, f"+{len(rows) - limit} more", 10, fill="#777"))
    return parts


def render_svg(panels: list[dict], start: float, end: float, title: str = "Claude vLLM fleet") -> str:
    """The SVG document: a grid of the panels ({title, type, unit, series: [{name, points}]}, optional error)."""
    rows = max(1, math.ceil(len(panels) / COLUMNS))
    width, height = COLUMNS * CELL_WIDTH, HEADER + rows * CELL_HEIGHT
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif">',
             f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
             _text(16, 30, title, 18, weight="bold"),
             _text(width - 16, 30, f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(start))} to "
                                   f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(end))} UTC", 12, "end", fill="#555")]
    for index, panel in enumerate(panels):
        x, y = (index % COLUMNS) * CELL_WIDTH, HEADER + (index // COLUMNS) * CELL_HEIGHT
        parts.append(f'<g transform="translate({x},{y})">')
        parts.append(f'<rect x="4" y="4" width="{CELL_WIDTH - 8}" height="{CELL_HEIGHT - 8}" rx="4" fill="none" '
                     f'stroke="#d0d0d0"/>')
        parts.append(_text(14, 22, panel["title"], 13, weight="bold"))
        parts += _table(panel) if panel.get("type") in ("table", "stat") else _chart(panel, start, end)
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", required=True, help="Prometheus' root URL, e.g. http://mon-01:9090")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD)
    parser.add_argument("--range", default="1h", help="how far back from --end (a duration; default 1h)")
    parser.add_argument("--step", default="", help="resolution (a duration; default: range / 120)")
    parser.add_argument("--rate-interval", default="1m", help="what $__rate_interval becomes (default 1m)")
    parser.add_argument("--end", type=float, default=None, help="Unix time of the range's end (default: now)")
    parser.add_argument("--out", type=Path, required=True, help="the SVG file to write")
    args = parser.parse_args(argv)
    try:
        span = duration_seconds(args.range)
        step = duration_seconds(args.step) if args.step else max(span / 120, 1)
        duration_seconds(args.rate_interval)
    except ValueError as exc:
        parser.error(str(exc))
    end = args.end if args.end is not None else time.time()
    dashboard = json.loads(args.dashboard.read_text())
    panels = collect(args.prometheus, dashboard, end - span, end, step, args.rate_interval)
    args.out.write_text(render_svg(panels, end - span, end, dashboard.get("title") or "Grafana dashboard"))
    empty = [panel["title"] for panel in panels if not any(item["points"] for item in panel["series"])]
    print(f"{args.out}: {len(panels)} panels, {sum(len(panel['series']) for panel in panels)} series"
          + (f"; without data: {', '.join(empty)}" if empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
