"""The leaderboard page: a static, self-contained HTML file, and the same tables in Markdown
and CSV.

The HTML needs no server and no network: the tables are written out as HTML (readable without
JavaScript), the run data are inlined as JSON, and a small script written here sorts a table
when a header is clicked and draws the per-class accuracy plots as inline SVG. Published
numbers (``matbench/data/published.json``) sit in the same tables, marked as published. Each
measured row links to its run record (JSON) and its config, relative to the page.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from matbench.leaderboard.registry import BENCHMARKS
from matbench.leaderboard.runner import load_records
from matbench.results import atomic_write_text, headline

STEM = "leaderboard"
FIXED = ("model", "protocol", "status")
#: Scalar metrics that describe the run rather than score it (shown last).
BOOKKEEPING = ("weight_decay", "fits", "count", "loss")


def _metric_columns(
    benchmark: str, records: list[dict[str, Any]], published: list[dict[str, Any]]
) -> list[str]:
    spec = BENCHMARKS.get(benchmark)
    first = list(dict.fromkeys(spec.headline.values())) if spec else []
    seen: list[str] = []
    for record in records:
        seen += [k for k in headline(record.get("metrics") or {}) if k not in seen]
    for row in published:
        seen += [k for k in row["metrics"] if k not in seen]
    rest = [k for k in seen if k not in first and not k.startswith(BOOKKEEPING)]
    tail = [k for k in seen if k.startswith(BOOKKEEPING) and k not in first]
    return [k for k in first if k in seen] + rest + tail


def leaderboard_tables(out: Path) -> list[dict[str, Any]]:
    """One table per benchmark: its columns and rows (measured runs, then published rows)."""
    from matbench.report import published_rows

    records = load_records(out)
    names = list(dict.fromkeys(r["benchmark"] for r in records))
    tables = []
    for name in names:
        spec = BENCHMARKS.get(name)
        mine = [r for r in records if r["benchmark"] == name]
        published = published_rows({spec.published}) if spec and spec.published else []
        columns = _metric_columns(name, mine, published)
        rows = []
        for record in mine:
            metrics = record.get("metrics") or {}
            row: dict[str, Any] = {
                "model": record["model"]["name"],
                "protocol": record["protocol"],
                "status": record["status"],
                "source": "measured",
                "note": record.get("reason") or record.get("error") or "",
                "record": record.get("record", ""),
                "config": record.get("config", ""),
                "images_per_second": record.get("images_per_second"),
                "headline": record.get("headline", ""),
                "per_class": metrics.get("per_class_accuracy"),
                "class_names": (record.get("data") or {}).get("class_names"),
            }
            row.update({k: metrics.get(k) for k in columns})
            rows.append(row)
        headline_key = next(iter(spec.headline.values()), "") if spec else ""
        rows.sort(key=lambda r: (r["status"] != "ok", -_number(r.get(headline_key))))
        for entry in published:
            row = {
                "model": entry["model"],
                "protocol": entry["protocol"],
                "status": "published",
                "source": entry["source"],
                "note": entry["source"],
            }
            row.update({k: entry["metrics"].get(k) for k in columns})
            rows.append(row)
        tables.append(
            {
                "benchmark": name,
                "title": spec.title if spec else name,
                "headline": headline_key,
                "columns": columns,
                "rows": rows,
            }
        )
    return tables


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else -math.inf


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"
    return str(value)


def write_leaderboard(out: Path, title: str = "matbench leaderboard") -> list[Path]:
    """Write ``leaderboard.{html,md,csv}`` into ``out`` from its run records."""
    out = Path(out)
    tables = leaderboard_tables(out)
    generated = datetime.now().astimezone().isoformat(timespec="seconds")
    paths = [out / f"{STEM}.html", out / f"{STEM}.md", out / f"{STEM}.csv"]
    atomic_write_text(paths[0], render_html(tables, title, generated))
    atomic_write_text(paths[1], render_markdown(tables, title, generated))
    atomic_write_text(paths[2], render_csv(tables))
    return paths


# -- Markdown and CSV -------------------------------------------------------------------------------
def render_markdown(tables: list[dict[str, Any]], title: str, generated: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Generated {generated}. Rows marked *published* are the "
        "reference works' numbers, not measured here.",
        "",
    ]
    for table in tables:
        columns = [*FIXED, *table["columns"], "images/s", "note"]
        lines += [f"## {table['title']}", "", "| " + " | ".join(columns) + " |"]
        lines.append("|" + "---|" * len(columns))
        for row in table["rows"]:
            model = (
                f"{row['model']} *(published)*" if row["status"] == "published" else row["model"]
            )
            cells = [model, row["protocol"], row["status"]]
            cells += [_fmt(row.get(c)) for c in table["columns"]]
            cells += [_fmt(row.get("images_per_second")), row.get("note", "")]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def render_csv(tables: list[dict[str, Any]]) -> str:
    metric_columns: list[str] = []
    for table in tables:
        metric_columns += [c for c in table["columns"] if c not in metric_columns]
    columns = ["benchmark", *FIXED, "source", *metric_columns, "images_per_second", "note",
               "record", "config"]  # fmt: skip
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for table in tables:
        for row in table["rows"]:
            writer.writerow(
                {"benchmark": table["benchmark"], **{c: row.get(c, "") for c in columns[1:]}}
            )
    return buf.getvalue()


# -- HTML ---------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left}
th{background:#f4f4f4;cursor:pointer;user-select:none;white-space:nowrap}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.published{background:#fff8e1;font-style:italic}tr.failed td{color:#b00020}
tr.skipped td{color:#777}.badge{font-size:.75rem;border-radius:.6rem;padding:0 .4rem;
background:#ffe082;margin-left:.3rem;font-style:normal}.note{max-width:28rem;font-size:.8rem}
.plots{display:flex;flex-wrap:wrap;gap:1.5rem}.plot{font-size:.8rem}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  function cellValue(td) {
    var v = td.getAttribute("data-value");
    if (v !== null && v !== "") { return parseFloat(v); }
    return td.textContent.trim().toLowerCase();
  }
  function compare(a, b, descending) {
    var an = typeof a === "number", bn = typeof b === "number";
    if (an && bn) { return descending ? b - a : a - b; }
    if (an !== bn) { return an ? -1 : 1; }  // numbers before blanks, in both directions
    return descending ? (a < b ? 1 : a > b ? -1 : 0) : (a < b ? -1 : a > b ? 1 : 0);
  }
  function sortTable(table, index, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      return compare(cellValue(r1.cells[index]), cellValue(r2.cells[index]), descending);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.setAttribute("aria-sort", i === index ? (descending ? "descending" : "ascending") : "none");
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.leaderboard"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") !== "descending";
        sortTable(table, index, descending);
      });
    });
  });
  var SVG = "http://www.w3.org/2000/svg";
  var COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }
  function drawPlot(container, classes, series) {
    var barH = 8, gap = 6, labelW = 110, plotW = 260;
    var groupH = series.length * barH + gap;
    var height = classes.length * groupH + 24;
    var svg = el("svg", {width: labelW + plotW + 40, height: height, role: "img"});
    classes.forEach(function (name, c) {
      var y0 = c * groupH;
      svg.appendChild(el("text", {x: labelW - 4, y: y0 + groupH / 2, "text-anchor": "end",
                                  "dominant-baseline": "middle", "font-size": 11}, name));
      series.forEach(function (s, i) {
        var v = s.values[c];
        if (typeof v !== "number" || !isFinite(v)) { return; }
        var bar = el("rect", {x: labelW, y: y0 + i * barH, width: Math.max(0, v) * plotW,
                              height: barH - 1, fill: COLOURS[i % COLOURS.length]});
        bar.appendChild(el("title", {}, s.label + ": " + name + " " + v.toFixed(3)));
        svg.appendChild(bar);
      });
    });
    [0, 0.5, 1].forEach(function (t) {
      var x = labelW + t * plotW;
      svg.appendChild(el("line", {x1: x, x2: x, y1: 0, y2: height - 20, stroke: "#bbb"}));
      svg.appendChild(el("text", {x: x, y: height - 6, "text-anchor": "middle",
                                  "font-size": 10}, String(t)));
    });
    container.appendChild(svg);
    var legend = document.createElement("div");
    series.forEach(function (s, i) {
      var item = document.createElement("span");
      item.style.color = COLOURS[i % COLOURS.length];
      item.textContent = "\u25A0 " + s.label + "  ";
      legend.appendChild(item);
    });
    container.appendChild(legend);
  }
  data.plots.forEach(function (plot) {
    var container = document.getElementById(plot.id);
    if (container) { drawPlot(container, plot.classes, plot.series); }
  });
  document.body.setAttribute("data-ready", "1");
})();
"""


def _plots(table: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """Per-class accuracy plots of a table: one per protocol, a series per model."""
    plots = []
    by_protocol: dict[str, list[dict[str, Any]]] = {}
    for row in table["rows"]:
        if (
            row["status"] == "ok"
            and isinstance(row.get("per_class"), list)
            and row.get("class_names")
        ):
            by_protocol.setdefault(row["protocol"], []).append(row)
    for protocol, rows in by_protocol.items():
        classes = rows[0]["class_names"]
        series = [
            {
                "label": row["model"],
                "values": [
                    v if isinstance(v, (int, float)) and math.isfinite(v) else None
                    for v in row["per_class"]
                ],
            }
            for row in rows
            if row["class_names"] == classes
        ]
        plots.append(
            {
                "id": f"plot-{index}-{protocol}",
                "title": f"{table['title']}: per-class accuracy ({protocol})",
                "classes": classes,
                "series": series,
            }
        )
    return plots


def _table_html(table: dict[str, Any], index: int) -> str:
    esc = html.escape
    columns = [*FIXED, *table["columns"], "images/s", "run", "note"]
    head = "".join(
        f'<th scope="col" aria-sort="none" title="click to sort">{esc(c)}</th>' for c in columns
    )
    body = []
    for row in table["rows"]:
        status = row["status"]
        model = esc(row["model"])
        if status == "published":
            model += '<span class="badge">published</span>'
        cells = [f"<td>{model}</td>", f"<td>{esc(row['protocol'])}</td>", f"<td>{esc(status)}</td>"]
        for key in [*table["columns"], "images_per_second"]:
            value = row.get(key)
            number = value if isinstance(value, (int, float)) and math.isfinite(value) else None
            data_value = "" if number is None else repr(float(number))
            cells.append(f'<td class="num" data-value="{data_value}">{esc(_fmt(value))}</td>')
        links = []
        if row.get("record"):
            links.append(f'<a href="{esc(row["record"])}">json</a>')
        if row.get("config"):
            links.append(f'<a href="{esc(row["config"])}">config</a>')
        cells.append(f"<td>{' '.join(links)}</td>")
        cells.append(f'<td class="note">{esc(row.get("note", ""))}</td>')
        body.append(f'<tr class="{esc(status)}">{"".join(cells)}</tr>')
    return (
        f'<section id="bench-{esc(table["benchmark"])}"><h2>{esc(table["title"])}</h2>'
        f"<p>sorted by {esc(table['headline'])}; click a column to sort.</p>"
        f'<table class="leaderboard" data-benchmark="{esc(table["benchmark"])}">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def render_html(tables: list[dict[str, Any]], title: str, generated: str) -> str:
    esc = html.escape
    sections, plots = [], []
    for i, table in enumerate(tables):
        table_plots = _plots(table, i)
        plots += table_plots
        divs = "".join(
            f'<div class="plot"><div>{esc(p["title"])}</div><div id="{esc(p["id"])}"></div></div>'
            for p in table_plots
        )
        sections.append(
            _table_html(table, i)
            + (f'<div class="plots">{divs}</div>' if divs else "")
            + "</section>"
        )
    payload = json.dumps({"title": title, "generated": generated, "plots": plots})
    payload = payload.replace("</", "<\\/")  # keep the script element closed where it should be
    empty = "" if tables else "<p>No runs recorded yet.</p>"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>Generated {esc(generated)} by matbench leaderboard. "
        "Rows marked <em>published</em> are the reference works' numbers, not measured "
        "here; skipped and failed runs say why.</p>"
        f"{empty}{''.join(sections)}"
        f'<script type="application/json" id="leaderboard-data">{payload}</script>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
