"""Writing a Report: JSON (the stable schema of ``SCHEMA.md``) and one self-contained HTML page.

The HTML page carries its styles and plots inline (SVG), loads nothing from the network and opens
from a file:// URL: counts per tier and target, how each target was exercised (measured,
interpreted, compiled only), notes on what did not run, the unexpected results, the worst errors,
the distribution of error ratios per target and the training loss curves.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from .results import STATUSES, Report, Result

_COLORS = {"pass": "#2e7d32", "fail": "#c62828", "xfail": "#ef6c00", "xpass": "#6a1b9a", "skip": "#757575"}
_SERIES = ("#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f")


def write_json(report: Report, path: str | Path) -> Path:
    """Write the machine-readable report.

    >>> write_json(Report(level="quick"), "/tmp/conformance.json").name
    'conformance.json'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=1, allow_nan=False) + "\n")
    return path


def _e(x: object) -> str:
    return html.escape(str(x))


def _fmt(x: float | None) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    return f"{x:.3g}"


def histogram_svg(values: list[float], title: str, width: int = 520, height: int = 200) -> str:
    """An SVG histogram of log10(error ratio); ratio 0 (bitwise equal) and inf/NaN get their own bars."""
    exact = sum(1 for v in values if v == 0)
    bad = sum(1 for v in values if not math.isfinite(v))
    logs = [math.log10(v) for v in values if v > 0 and math.isfinite(v)]
    edges = list(range(-8, 4))  # bins [-8,-7) ... [2,3), clamped
    bins = [0] * (len(edges) - 1)
    for lv in logs:
        k = min(max(int(math.floor(lv)) - edges[0], 0), len(bins) - 1)
        bins[k] += 1
    labels = ["exact"] + [f"1e{e}" for e in edges[:-1]] + ["inf/nan"]
    counts = [exact] + bins + [bad]
    top = max(counts + [1])
    pad, bw = 30, (width - 40) / len(counts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12">{_e(title)}</text>']
    for i, (label, c) in enumerate(zip(labels, counts)):
        h = (height - 2 * pad - 10) * c / top
        x = 30 + i * bw
        over = label == "inf/nan" or (label.startswith("1e") and int(label[2:]) >= 0)
        color = "#c62828" if over and c else "#1565c0"
        parts.append(f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                     f'fill="{color}"><title>{label}: {c}</title></rect>')
        if c:
            parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - pad - h - 2:.1f}" text-anchor="middle" '
                         f'font-size="9">{c}</text>')
        parts.append(f'<text x="{x + bw / 2:.1f}" y="{height - pad + 12}" text-anchor="middle" '
                     f'font-size="8">{label}</text>')
    x1 = 30 + (1 + (0 - edges[0])) * bw - 1
    parts.append(f'<line x1="{x1:.1f}" y1="20" x2="{x1:.1f}" y2="{height - pad}" stroke="#c62828" '
                 'stroke-dasharray="4 2"/>')
    parts.append(f'<text x="{x1 + 3:.1f}" y="28" font-size="9" fill="#c62828">tolerance</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle" font-size="9">'
                 "error ratio |a-b| / (atol + rtol|b|), log bins</text></svg>")
    return "".join(parts)


def curves_svg(series: dict[str, list[float]], title: str, width: int = 520,
               height: int = 220) -> str:
    """An SVG line plot of loss curves (one polyline per series, shared axes)."""
    vals = [v for s in series.values() for v in s if math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    n = max((len(s) for s in series.values()), default=1)
    pad_l, pad, w, h = 50, 25, width - 70, height - 60
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12">{_e(title)}</text>',
             f'<rect x="{pad_l}" y="{pad}" width="{w}" height="{h}" fill="none" stroke="#999"/>',
             f'<text x="{pad_l - 4}" y="{pad + 8}" text-anchor="end" font-size="9">{hi:.4g}</text>',
             f'<text x="{pad_l - 4}" y="{pad + h}" text-anchor="end" font-size="9">{lo:.4g}</text>',
             f'<text x="{pad_l + w / 2}" y="{pad + h + 14}" text-anchor="middle" font-size="9">'
             f'step (1..{n})</text>']
    for k, (name, s) in enumerate(series.items()):
        pts = " ".join(f"{pad_l + (i / max(n - 1, 1)) * w:.1f},{pad + h - (v - lo) / (hi - lo) * h:.1f}"
                       for i, v in enumerate(s) if math.isfinite(v))
        color = _SERIES[k % len(_SERIES)]
        dash = ' stroke-dasharray="5 3"' if k else ""
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.8"{dash}/>')
        parts.append(f'<text x="{pad_l + 8 + k * 110}" y="{height - 8}" font-size="10" fill="{color}">'
                     f'&#9632; {_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _result_rows(results: list[Result]) -> str:
    rows = []
    for r in results:
        rows.append(f'<tr><td class="{r.status}">{r.status}</td><td>{_e(r.tier)}</td>'
                    f"<td>{_e(r.target)}</td><td>{_e(r.case)}</td><td>{_e(r.dtype)}</td>"
                    f"<td>{_e(r.check)}</td><td>{_fmt(r.error_ratio)}</td><td>{_fmt(r.abs_error)}</td>"
                    f"<td>{_e(r.sample)}</td><td class=msg>{_e(r.message[:400])}</td></tr>")
    head = ("<tr><th>status</th><th>tier</th><th>target</th><th>case</th><th>dtype</th><th>check</th>"
            "<th>error ratio</th><th>abs error</th><th>sample</th><th>message</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>" if rows else "<p>none</p>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;\
margin:24px;color:#222;max-width:1400px}
h1{margin-bottom:4px} \
.verdict{font-size:20px;font-weight:bold;padding:8px 12px;border-radius:6px;display:inline-block}
.ok{background:#e8f5e9;color:#2e7d32} .bad{background:#ffebee;color:#c62828}
table{border-collapse:collapse;margin:8px 0 16px 0;font-size:12px} \
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f5f5f5} td.pass{color:#2e7d32} td.fail{color:#c62828;font-weight:bold} td.xfail{color:#ef6c00}
td.xpass{color:#6a1b9a;font-weight:bold} td.skip{color:#757575} td.msg{max-width:520px;word-break:break-word}
.plots{display:flex;flex-wrap:wrap;gap:12px} .plots svg{border:1px solid #eee;background:#fff}
.mode-measured{color:#2e7d32;font-weight:bold} .mode-interpreted{color:#1565c0;font-weight:bold}
.mode-compiled{color:#6a1b9a;font-weight:bold}
"""


def render_html(report: Report) -> str:
    """The report as one HTML document with inline CSS and SVG."""
    data = report.to_json()
    env = data["environment"]
    ok = data["passed"]
    counts = data["counts"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'>"
           f"<title>agnostic-rt conformance ({report.level})</title><style>{_CSS}</style></head><body>",
           f"<h1>agnostic-rt conformance — {_e(report.level)}</h1>",
           f"<p>torch {_e(env['torch'])}, Python {_e(env['python'])}, {_e(env['machine'])}; "
           f"GPU in this process: {'yes' if env['cuda_available'] else 'no'}. "
           f"Took {(report.finished or report.started) - report.started:.0f} s.</p>",
           f"<div class='verdict {'ok' if ok else 'bad'}'>{'PASS' if ok else 'FAIL'}: "
           + ", ".join(f"{data['totals'][s]} {s}" for s in STATUSES) + "</div>"]
    out.append("<h2>Targets: what was measured, what was only interpreted or compiled</h2><table>"
               "<tr><th>target</th><th>how</th><th>description</th></tr>")
    for t in data["targets"]:
        out.append(f"<tr><td>{_e(t['name'])}</td><td class='mode-{_e(t['mode'])}'>{_e(t['mode'])}</td>"
                   f"<td>{_e(t['description'])}</td></tr>")
    out.append("</table>")
    if data["notes"]:
        out.append("<h2>Not run</h2><table><tr><th>tier</th><th>target</th><th>status</th><th>why</th></tr>")
        for n in data["notes"]:
            out.append(f"<tr><td>{_e(n['tier'])}</td><td>{_e(n['target'])}</td><td>{_e(n['status'])}</td>"
                       f"<td>{_e(n['message'])}</td></tr>")
        out.append("</table>")
    out.append("<h2>Counts per tier and target</h2><table><tr><th>tier</th><th>target</th>"
               + "".join(f"<th>{s}</th>" for s in STATUSES) + "</tr>")
    for tier, per in counts.items():
        for target, c in per.items():
            out.append(f"<tr><td>{_e(tier)}</td><td>{_e(target)}</td>"
                       + "".join(f"<td class='{s if c[s] else ''}'>{c[s]}</td>" for s in STATUSES) + "</tr>")
    out.append("</table>")
    out.append("<h2>Unexpected results</h2>" + _result_rows(report.unexpected()))
    out.append("<h2>Worst errors</h2>" + _result_rows(report.worst(20)))
    out.append("<h2>Error distributions (op tier)</h2><div class='plots'>")
    per_target: dict[str, list[float]] = {}
    for r in report.results:
        if r.tier == "op" and r.error_ratio is not None and r.status != "skip":
            per_target.setdefault(r.target, []).append(r.error_ratio)
    for target, values in per_target.items():
        out.append(histogram_svg(values, f"{target}: {len(values)} op checks"))
    if not per_target:
        out.append("<p>no op-tier results</p>")
    out.append("</div><h2>Loss curves</h2><div class='plots'>")
    curves = [r for r in report.results if r.check == "train-curve" and r.extra.get("compiled")]
    for r in curves:
        series = {"compiled": r.extra["compiled"], "eager": r.extra["eager"], "fp64": r.extra["fp64"]}
        out.append(curves_svg(series, f"{r.case} on {r.target} ({r.status})"))
    for r in report.results:
        if r.tier == "migration" and r.extra.get("losses"):
            series = {"migrated": r.extra["losses"], "uninterrupted": r.extra["reference_losses"]}
            out.append(curves_svg(series, f"{r.case} on {r.target} ({r.status})"))
    if not curves:
        out.append("<p>no training curves in this run</p>")
    out.append("</div><h2>All non-passing results</h2>"
               + _result_rows([r for r in report.results if r.status != "pass"][:2000]))
    out.append("</body></html>")
    return "\n".join(out)


def write_html(report: Report, path: str | Path) -> Path:
    """Write the self-contained HTML page.

    >>> write_html(Report(level="quick"), "/tmp/conformance.html").suffix
    '.html'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report))
    return path
