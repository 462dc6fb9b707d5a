"""Rendering a validation report (the JSON-ready dict of :meth:`caffe2x.validation.validator.Report.to_dict`).

* :func:`render_table` -- the plain-text summary ``caffe2x validate`` prints;
* :func:`render_json` -- the machine-readable report (schema ``caffe2x.validate/1``,
  docs/validate-report-schema.md);
* :func:`render_html` -- one self-contained page: summary, per-image top-5, artifacts and, with
  ``--per-layer``, an inline SVG plot of the error per layer (log scale, one line per framework, the
  tolerance dashed). No JavaScript, no external resources.

Everything here works from the dict alone, so a stored JSON report can be re-rendered.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

#: line colours, one per framework (colour-blind-safe Okabe-Ito palette)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000")
#: where exact (zero) errors are drawn on the log axis
ZERO_FLOOR = 1e-12


# --------------------------------------------------------------------------- formatting
def _e(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}e}"


def _tol(x: float) -> str:
    if x == 0:
        return "0"
    mant, exp = f"{x:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def _secs(f: dict[str, Any]) -> str:
    parts = [f.get("prepare_seconds"), f.get("run_seconds")]
    if all(p is None for p in parts):
        return "-"
    return f"{sum(p or 0.0 for p in parts):.1f}s"


def _frac(n: int | None, total: int) -> str:
    return "-" if n is None else f"{n}/{total}"


def _image_names(report: dict[str, Any]) -> list[str]:
    inp = report["input"]
    if inp.get("images"):
        return [Path(p).name for p in inp["images"]]
    return [f"sample {i}" for i in range(int(inp["shape"][0]))]


def _row_names(report: dict[str, Any]) -> list[str]:
    """A name per row of the reference's top-5: the images when the logits have one row per image,
    else ``row i`` (a net whose output is not per image, e.g. SSD's DetectionOutput gathers the
    detections of the whole batch into one blob)."""
    names, rows = _image_names(report), len(report["reference"]["top5"])
    return names if len(names) == rows else [f"row {i}" for i in range(rows)]


def _row(rows: list[Any] | None, i: int) -> Any:
    return rows[i] if rows is not None and i < len(rows) else None


def _classes(report: dict[str, Any], indices: list[int] | None, labels: list[str] | None) -> str:
    if indices is None:
        return "-"
    if labels:
        return ", ".join(f"{lab} ({i})" for i, lab in zip(indices, labels))
    return " ".join(str(i) for i in indices)


def _input_line(report: dict[str, Any]) -> str:
    inp = report["input"]
    n, *rest = inp["shape"]
    dims = "x".join(str(d) for d in rest)
    if inp["kind"] == "images":
        mean = inp.get("mean") or {}
        if mean.get("kind") == "image":
            m = f"mean image {Path(mean.get('path') or '?').name}"
        else:
            vals = mean.get("values") or []
            if len(vals) == 3:
                m = "mean " + " ".join(f"{c} {v:g}" for c, v in zip("BGR", vals))
            else:
                m = "mean " + ",".join(f"{v:g}" for v in vals)
        return f"{n} photo(s), {dims} BGR, shorter side {inp.get('resize_shorter')} + centre crop, {m}"
    if inp["kind"] == "array":
        return f"{n} sample(s) of {dims} from {', '.join(inp.get('images') or [])}"
    return f"{n} seeded Gaussian sample(s) of {dims}"


def verdict(report: dict[str, Any]) -> str:
    """One line: PASS with what agreed, or FAIL with the first problems."""
    tol = report["tolerance"]
    if report["passed"]:
        tied = [f["name"] for f in report["frameworks"] if f["status"] == "PASS" and _tied(f)]
        ran = [f["name"] for f in report["frameworks"] if f["status"] == "PASS" and f["name"] not in tied]
        arts = len(report["artifacts"])
        what = ", ".join(ran) if ran else "no framework" if not tied else ""
        extra = f" and {arts} artifact(s) check out" if arts else ""
        atol = f", atol {_tol(tol['atol'])}" if tol["atol"] else ""
        rule = f"within rtol {_tol(tol['rtol'])}{atol} with identical top-5 on {report['input']['shape'][0]} input(s)"
        verb = "agrees" if len(ran) == 1 else "agree"
        parts = [f"{what} {verb} with the reference {rule}"] if what else []
        if tied:  # ties.py: each flip a near-tie, then the logits against the reference run on its choices
            parts.append(f"{', '.join(tied)} {'agrees' if len(tied) == 1 else 'agree'} {rule} with the reference "
                         f"run on {'its' if len(tied) == 1 else 'their'} own cell choices of masked MAX pooling, "
                         f"every differing choice a near-tie")
        return f"PASS: {'; '.join(parts)}{extra}"
    failures = report["failures"]
    more = f" (+{len(failures) - 3} more)" if len(failures) > 3 else ""
    return "FAIL: " + " | ".join(failures[:3]) + more


def _tied(framework: dict[str, Any]) -> bool:
    """The framework passed only through the near-tie check (:mod:`caffe2x.validation.ties`)."""
    return bool((framework.get("near_ties") or {}).get("passed"))


def render_table(report: dict[str, Any]) -> str:
    """The text summary: one row per framework, per-image top-5, per-layer notes, artifacts, verdict."""
    tol = report["tolerance"]
    n = int(report["input"]["shape"][0])
    lines = [
        f"caffe2x validate {Path(report['model']).name}: logits {report['logits']['blob']!r} "
        f"({report['logits']['note']})",
        f"input: {_input_line(report)}",
        f"tolerance: max|a-b| <= {_tol(tol['atol'])} + {_tol(tol['rtol'])} * max|ref| "
        f"(max|ref| = {report['reference']['max_abs']:.3g}), identical top-5",
    ]
    if report["input"].get("note"):
        lines.append(f"note: {report['input']['note']}")
    lines.append("")
    head = ["framework", "status", "max abs", "max rel", "top-1", "top-5", "time", "file / reason"]
    rows = []
    for f in report["frameworks"]:
        last = f["artifact"] or ""
        if f["status"] != "PASS" and f["reason"]:
            last = f["reason"]
        elif _tied(f):
            last = f"{last}: agrees up to near-tie flips (below)".lstrip(": ")
        rows.append([f["name"], f["status"], _e(f["max_abs"]), _e(f["max_rel"]), _frac(f["top1_agree"], n),
                     _frac(f["top5_agree"], n), _secs(f), last])
    lines.extend(_grid(head, rows))

    names = _row_names(report)
    ref = report["reference"]
    lines.append("")
    lines.append("top-5 per image (reference)" if len(names) == n else "top-5 per row of the logits (reference)")
    width = max((len(s) for s in names), default=5)
    for i, name in enumerate(names):
        labels = _row(ref.get("top5_labels"), i)
        lines.append(f"  {name:<{width}}  {_classes(report, ref['top5'][i], labels)}")
        for f in report["frameworks"]:
            if f["top5"] is not None and _row(f["top5"], i) != ref["top5"][i]:
                flab = _row(f.get("top5_labels"), i)
                lines.append(f"  {'':<{width}}  {f['name']}: {_classes(report, f['top5'][i], flab)}  <- differs")

    checked = [f for f in report["frameworks"] if f.get("near_ties")]
    if checked:
        lines.append("")
        lines.append("masked MAX pooling (unpooled by its mask): the frameworks' cell choices, pinned in the reference")
        for f in checked:
            t = f["near_ties"]
            lines.append(f"  {f['name']:<10} {'PASS' if t['passed'] else 'FAIL'}: {t['note']}")

    if report.get("layers"):
        lines.append("")
        lines.append(f"per layer ({len(report['layers'])} layers, max rel error against the reference):")
        for f in report["frameworks"]:
            curve = f.get("per_layer_max_rel")
            if curve is None:
                continue
            finite = [v for v in curve if v is not None]
            worst = max(finite) if finite else None
            first = f.get("first_divergent_layer")
            where = f"worst {_e(worst)} at {f['worst_layer']}" if f.get("worst_layer") else "exact at every layer"
            lines.append(f"  {f['name']:<10} {where}; "
                         + (f"first layer past tolerance: {first}" if first else "every layer within tolerance"))

    if report["artifacts"]:
        lines.append("")
        head = ["artifact", "status", "tensors", "logits max rel", "top-5", "problem"]
        rows = []
        for a in report["artifacts"]:
            lg = a.get("logits") or {}
            rows.append([Path(a["path"]).name, a["status"], str(a["tensors_checked"]), _e(lg.get("max_rel")),
                         _frac(lg.get("top5_agree"), n), (a["messages"][0].split(": ", 1)[-1] if a["messages"]
                                                          else _profile_note(a.get("conversion")))])
        lines.extend(_grid(head, rows))

    for oracle in report.get("oracles") or ():
        lines.append("")
        lines.append(_oracle_line(oracle))

    if report["pairwise"] and len(report["pairwise"]) > 0:
        pairs = ", ".join(f"{p['a']}-{p['b']} {_e(p['max_rel'])}" for p in report["pairwise"])
        lines.append("")
        lines.append(f"pairwise max rel: {pairs}")
    lines.append("")
    lines.append(verdict(report))
    return "\n".join(lines)


def _oracle_line(result: dict[str, Any]) -> str:
    """The report's one line for an oracle."""
    head = f"oracle {result['name']} {result.get('version') or ''}".rstrip() + ": "
    rel = result.get("max_rel")
    measured = ""
    if rel is not None:
        fws = ", ".join(f"{f['name']} {f['max_rel']:.1e}" for f in result.get("frameworks", [])
                        if f.get("max_rel") is not None)
        measured = f"max rel {rel:.1e} vs the reference" + (f" ({fws} vs {result['name']})" if fws else "")
        if result.get("top5_agree") is not None:
            measured += f", top-5 {result['top5_agree']}/{result.get('samples')}"
    if result["status"] == "PASS":
        return head + "PASS, " + measured
    if result["status"] == "NOT_JUDGED":
        return head + result["reason"] + (f"; {measured}" if measured else "")
    if result["status"] == "FAIL":
        return head + f"FAIL, {result['reason']}" + (f"; {measured}" if measured else "")
    return head + f"skipped, {result['reason']}"


def _profile_note(conversion: dict[str, Any] | None) -> str:
    """A naming-profile artifact's measured difference against its bound (empty for other files)."""
    if not conversion or not conversion.get("profile"):
        return ""
    return (f"{conversion['profile']} profile: seeded-input logits {_e(conversion['profile_max_rel'])} "
            f"within bound {_e(conversion['profile_bound'])} ({conversion['profile_bound_source']})")


def _grid(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [fmt(head), fmt(["-" * w for w in widths]), *[fmt(r) for r in rows]]


def render_json(report: dict[str, Any]) -> str:
    """The report as strict JSON (no NaN), indented."""
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- SVG plot
def render_svg(report: dict[str, Any], width: int = 1100, height: int = 440) -> str:
    """Max relative error per layer (log y), one polyline per framework, the tolerance dashed.

    Well-formed standalone SVG (XML); each point carries a ``<title>`` tooltip. Exact zeros are drawn
    on the axis floor.
    """
    layers = report.get("layers") or []
    curves = [(f["name"], f["per_layer_max_rel"], f.get("first_divergent_layer")) for f in report["frameworks"]
              if f.get("per_layer_max_rel") is not None]
    rtol = float(report["tolerance"]["rtol"])
    e = html.escape
    left, right, top, bottom = 78, 170, 36, 150
    pw, ph = width - left - right, height - top - bottom
    values = [v for _, c, _ in curves for v in c if v is not None and v > 0]
    lo = min([*values, rtol]) if values else rtol
    hi = max([*values, rtol]) if values else rtol
    dec_lo = math.floor(math.log10(max(lo, ZERO_FLOOR * 10))) - 1
    dec_hi = max(math.ceil(math.log10(hi)) + 1, dec_lo + 2)
    floor = 10.0 ** dec_lo
    n = max(len(layers), 1)

    def xp(i: int) -> float:
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def yp(v: float | None) -> float:
        v = floor if v is None or v <= floor else v
        return top + ph * (dec_hi - math.log10(v)) / (dec_hi - dec_lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="plot-title" '
           f'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" font-size="12">',
           '<title id="plot-title">max relative error per layer against the numpy reference</title>',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fbfbfd" stroke="#c8c8d0"/>']
    # y grid: decades
    for d in range(dec_lo, dec_hi + 1):
        y = yp(10.0 ** d)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e3e3ea"/>')
        label = "exact" if d == dec_lo else f"1e{d}"
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{label}</text>')
    # x ticks: about 24 layer names
    step = max(1, math.ceil(n / 24))
    for i in range(0, len(layers), step):
        x = xp(i)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="#888"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 10}" transform="rotate(55 {x:.1f} {top + ph + 10})" '
                   f'fill="#444" font-size="10">{e(layers[i]["name"])}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" text-anchor="middle" fill="#333">'
               f'layer (graph order, {len(layers)} layers)</text>')
    out.append(f'<text x="16" y="{top + ph / 2:.1f}" transform="rotate(-90 16 {top + ph / 2:.1f})" '
               f'text-anchor="middle" fill="#333">max |a - ref| / max |ref|  (log)</text>')
    # tolerance
    ty = yp(rtol)
    out.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{left + pw}" y2="{ty:.1f}" stroke="#C0392B" '
               f'stroke-width="1.5" stroke-dasharray="7 5"/>')
    out.append(f'<text x="{left + pw - 4}" y="{ty - 5:.1f}" text-anchor="end" fill="#C0392B">'
               f'tolerance rtol {_tol(rtol)}</text>')
    # curves
    for k, (name, curve, first) in enumerate(curves):
        colour = PALETTE[k % len(PALETTE)]
        pts = " ".join(f"{xp(i):.1f},{yp(v):.1f}" for i, v in enumerate(curve) if v is not None)
        out.append(f'<g class="curve" data-framework="{e(name)}">')
        out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.8" '
                   f'stroke-linejoin="round" opacity="0.9"/>')
        for i, v in enumerate(curve):
            if v is None:
                continue
            lname = layers[i]["name"] if i < len(layers) else str(i)
            out.append(f'<circle cx="{xp(i):.1f}" cy="{yp(v):.1f}" r="2" fill="{colour}">'
                       f'<title>{e(name)} · {i} {e(lname)} ({e(layers[i]["op"] if i < len(layers) else "")}): '
                       f'{_e(v, 2)}</title></circle>')
        if first is not None:
            idx = next((i for i, l in enumerate(layers) if l["name"] == first), None)
            if idx is not None:
                x, y = xp(idx), yp(curve[idx])
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="none" stroke="{colour}" stroke-width="2"/>')
                out.append(f'<text x="{x + 9:.1f}" y="{y - 9:.1f}" fill="{colour}" font-weight="600">'
                           f'{e(name)}: first past tolerance: {e(first)}</text>')
        out.append('</g>')
    # legend
    lx = left + pw + 16
    for k, (name, _, _) in enumerate(curves):
        y = top + 12 + 20 * k
        colour = PALETTE[k % len(PALETTE)]
        out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 24}" y2="{y}" stroke="{colour}" stroke-width="2.5"/>')
        out.append(f'<text x="{lx + 30}" y="{y + 4}" fill="#222">{e(name)}</text>')
    y = top + 12 + 20 * len(curves)
    out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 24}" y2="{y}" stroke="#C0392B" stroke-width="1.5" '
               f'stroke-dasharray="7 5"/>')
    out.append(f'<text x="{lx + 30}" y="{y + 4}" fill="#222">tolerance</text>')
    out.append('</svg>')
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML page
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1d1d24;margin:0;background:#f4f4f7}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px;background:#fff;min-height:100vh;box-sizing:border-box}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px;border-bottom:1px solid #e4e4ea;padding-bottom:4px}
.sub{color:#555;margin:2px 0}
.verdict{display:inline-block;margin:14px 0 4px;padding:8px 14px;border-radius:6px;font-weight:600}
.verdict.pass{background:#e3f5e9;color:#17623a;border:1px solid #9fd8b4}
.verdict.fail{background:#fdeaea;color:#8c1d1d;border:1px solid #f0a8a8}
table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{padding:5px 12px;text-align:left;border-bottom:1px solid #ececf1;vertical-align:top}
th{background:#f7f7fa;font-weight:600;color:#333}
td.num{text-align:right;white-space:nowrap;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
th{white-space:nowrap}
.badge{display:inline-block;min-width:38px;text-align:center;padding:1px 7px;border-radius:10px;font-size:12px;font-weight:700}
.PASS{background:#dff3e6;color:#17623a}.FAIL{background:#fbe0e0;color:#8c1d1d}.SKIP{background:#ececf1;color:#555}
.diff{color:#8c1d1d;font-weight:600}.muted{color:#777}
ul.fail{color:#8c1d1d}
figure{margin:8px 0;overflow-x:auto}figcaption{color:#555;font-size:12px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
"""


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts, no external resources)."""
    e = html.escape
    tol = report["tolerance"]
    n = int(report["input"]["shape"][0])
    ok = report["passed"]
    parts = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8"/>',
             '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
             f'<title>caffe2x validate: {e(Path(report["model"]).name)}</title>',
             f'<style>{_CSS}</style></head><body><main>',
             f'<h1>caffe2x validate: {e(Path(report["model"]).name)}</h1>',
             f'<p class="sub">logits <code>{e(report["logits"]["blob"])}</code> ({e(report["logits"]["note"])})</p>',
             f'<p class="sub">input: {e(_input_line(report))}</p>',
             f'<p class="sub">pass rule: max|a&#8722;ref| &#8804; {e(_tol(tol["atol"]))} + {e(_tol(tol["rtol"]))} '
             f'&#183; max|ref| (max|ref| = {report["reference"]["max_abs"]:.3g}) and identical top-5 on every input</p>']
    if report["input"].get("note"):
        parts.append(f'<p class="sub">note: {e(report["input"]["note"])}</p>')
    parts.append(f'<div class="verdict {"pass" if ok else "fail"}">{e(verdict(report))}</div>')
    if len(report["failures"]) > 1:
        parts.append('<ul class="fail">' + "".join(f"<li>{e(f)}</li>" for f in report["failures"]) + "</ul>")

    parts.append('<h2>Frameworks</h2><table><thead><tr><th>framework</th><th>status</th><th>max abs</th>'
                 '<th>max rel</th><th>top-1</th><th>top-5</th><th>time</th><th>file / reason</th></tr></thead><tbody>')
    for f in report["frameworks"]:
        last = f["reason"] if f["status"] != "PASS" and f["reason"] else (f["artifact"] or "")
        if f["status"] == "PASS" and _tied(f):
            last = f"{last}: {f['near_ties']['note']}".lstrip(": ")
        parts.append(f'<tr><td>{e(f["name"])}</td><td><span class="badge {e(f["status"])}">{e(f["status"])}</span></td>'
                     f'<td class="num">{_e(f["max_abs"])}</td><td class="num">{_e(f["max_rel"])}</td>'
                     f'<td class="num">{_frac(f["top1_agree"], n)}</td><td class="num">{_frac(f["top5_agree"], n)}</td>'
                     f'<td class="num">{_secs(f)}</td><td>{e(last)}</td></tr>')
    parts.append('</tbody></table>')

    if report.get("layers"):
        parts.append('<h2>Error per layer</h2><figure>')
        parts.append(render_svg(report))
        firsts = [(f["name"], f.get("first_divergent_layer")) for f in report["frameworks"]
                  if f.get("per_layer_max_rel") is not None]
        cap = "; ".join(f"{e(nm)}: first layer past tolerance <b>{e(l)}</b>" if l else f"{e(nm)}: every layer within tolerance"
                        for nm, l in firsts)
        parts.append(f'<figcaption>max |a &#8722; ref| / max |ref| of each layer\'s output, log scale; '
                     f'exact agreement drawn on the bottom line. {cap}</figcaption></figure>')

    names = _row_names(report)
    ref = report["reference"]
    parts.append('<h2>Top-5 per input</h2><table><thead><tr><th>input</th><th>reference top-5</th>'
                 '<th>frameworks</th></tr></thead><tbody>')
    for i, name in enumerate(names):
        labels = _row(ref.get("top5_labels"), i)
        notes, same = [], []
        for f in report["frameworks"]:
            if f["top5"] is None:
                continue
            if _row(f["top5"], i) == ref["top5"][i]:
                same.append(f["name"])
            else:
                flab = _row(f.get("top5_labels"), i)
                notes.append(f'<span class="diff">{e(f["name"])}: {e(_classes(report, _row(f["top5"], i), flab))}</span>')
        if same:
            notes.append(f'<span class="muted">identical: {e(", ".join(same))}</span>')
        parts.append(f'<tr><td>{e(name)}</td><td><code>{e(_classes(report, ref["top5"][i], labels))}</code></td>'
                     f'<td>{"<br/>".join(notes)}</td></tr>')
    parts.append('</tbody></table>')

    if report["artifacts"]:
        parts.append('<h2>Artifacts</h2><table><thead><tr><th>artifact</th><th>status</th><th>tensors checked</th>'
                     '<th>logits max rel</th><th>top-5</th><th>problems</th></tr></thead><tbody>')
        for a in report["artifacts"]:
            lg = a.get("logits") or {}
            probs = "<br/>".join(e(m) for m in a["messages"]) or e(_profile_note(a.get("conversion")))
            parts.append(f'<tr><td><code>{e(Path(a["path"]).name)}</code></td>'
                         f'<td><span class="badge {e(a["status"])}">{e(a["status"])}</span></td>'
                         f'<td class="num">{a["tensors_checked"]}</td><td class="num">{_e(lg.get("max_rel"))}</td>'
                         f'<td class="num">{_frac(lg.get("top5_agree"), n)}</td><td>{probs}</td></tr>')
        parts.append('</tbody></table>')

    if report.get("oracles"):
        parts.append('<h2>Independent reference</h2>')
        for o in report["oracles"]:
            parts.append(f'<p><span class="badge {e(o["status"])}">{e(o["status"])}</span> {e(_oracle_line(o))}</p>')

    if report["pairwise"]:
        parts.append('<h2>Pairwise</h2><table><thead><tr><th>frameworks</th><th>max abs</th>'
                     '<th>max rel (to max|ref|)</th></tr></thead><tbody>')
        for p in report["pairwise"]:
            parts.append(f'<tr><td>{e(p["a"])} &#8596; {e(p["b"])}</td><td class="num">{_e(p["max_abs"])}</td>'
                         f'<td class="num">{_e(p["max_rel"])}</td></tr>')
        parts.append('</tbody></table>')

    env = report.get("environment") or {}
    parts.append('<h2>Environment</h2><p class="sub">' + e(", ".join(f"{k} {v}" for k, v in env.items())) +
                 f' &#183; {report.get("seconds") or 0:.1f}s &#183; schema <code>{e(report["schema"])}</code></p>')
    parts.append('</main></body></html>')
    return "\n".join(parts) + "\n"
