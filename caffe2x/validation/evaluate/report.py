"""The evaluation's figures, counted from the journal's batch files in order (memory: the counts, the
capped lists and one batch at a time), and their forms: the JSON report (schema ``caffe2x.evaluate/1``,
``docs/evaluate-report-schema.md``), the per-image CSV, the terminal table and the HTML plot.

Every fraction is a ratio of two counts (``top1_correct / images``), so a report says exactly how many
images did what. ``max_rel`` is ``max_abs / max|reference logit|`` over the whole set, the measure
``validate`` uses for its batch.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from caffe2x.errors import Caffe2xError
from caffe2x.validation.evaluate.journal import Journal, JournalError
from caffe2x.validation.evaluate.worker import REFERENCE, ImageRecord

SCHEMA = "caffe2x.evaluate/1"
#: disagreements and unreadable images listed in the JSON report (all of them are in ``--per-image``)
LISTED = 100
#: the bins of the per-image relative error histogram (HTML plot): 10^-12 .. 10^0 by half decades
HIST_LO, HIST_HI, HIST_STEP = -12.0, 0.0, 0.5


@dataclass
class Tally:
    """One framework's counts over the images seen so far."""

    name: str
    images: int = 0
    top1_correct: int = 0
    top5_correct: int = 0
    top1_agree: int = 0
    top5_agree: int = 0
    max_abs: float = 0.0
    finite: bool = True
    hist: list[int] = field(default_factory=lambda: [0] * (int((HIST_HI - HIST_LO) / HIST_STEP) + 2))

    def add(self, rec: ImageRecord, ref_top5: list[int]) -> bool:
        """Count one image; whether its top-1 differs from the reference's."""
        top5 = rec.top5[self.name]
        err = rec.max_abs[self.name]
        self.images += 1
        if rec.label is not None:
            self.top1_correct += int(top5[0] == rec.label)
            self.top5_correct += int(rec.label in top5)
        same1 = top5[0] == ref_top5[0]
        self.top1_agree += int(same1)
        self.top5_agree += int(set(top5) == set(ref_top5))
        if math.isnan(err):
            self.finite = False
        else:
            self.max_abs = max(self.max_abs, err)
        rel = err / rec.scale if rec.scale > 0 else err
        if math.isnan(rel) or rel <= 0:
            b = 0
        else:
            b = min(len(self.hist) - 1, max(1, 1 + int(math.floor((math.log10(rel) - HIST_LO) / HIST_STEP))))
        self.hist[b] += 1
        return not same1


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _num(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class Figures:
    """Everything the report shows, counted from the journal."""

    tallies: dict[str, Tally]
    scale: float = 0.0
    images: int = 0
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    disagreements_total: int = 0
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    unreadable_total: int = 0
    per_class: dict[int, list[int]] = field(default_factory=dict)   # class -> [images, top-1 agree per fw...]


def count(journal: Journal, frameworks: Sequence[str], batches: Sequence[Sequence[tuple[int, str, int | None]]],
          describe: Callable[[int], dict[str, Any]], per_image: io.TextIOBase | None = None) -> Figures:
    """Count every batch of the journal in order (``batches[b]``: its (index, path, label) items;
    ``describe(index)``: an image's ``image``/``line`` for the lists), writing ``per_image`` CSV rows."""
    figs = Figures({n: Tally(n) for n in frameworks})
    writer = None
    if per_image is not None:
        writer = csv.writer(per_image)
        head = ["index", "image", "label", "reference_top1"]
        for n in frameworks:
            head += [f"{n}_top1", f"{n}_top5", f"{n}_max_abs", f"{n}_max_rel"]
        writer.writerow(head)
    others = [n for n in frameworks if n != REFERENCE]
    for b, items in enumerate(batches):
        payload = journal.read(b)
        expected = {i for i, _p, _l in items}
        labels = {i: label for i, _p, label in items}
        seen: set[int] = set()
        records = []
        try:
            for d in payload["records"]:
                rec = ImageRecord.from_json(d)
                if set(rec.top5) != set(frameworks) or set(rec.max_abs) != set(frameworks):
                    raise ValueError("frameworks")
                records.append(rec)
            unreadable = [(int(u["i"]), str(u["reason"])) for u in payload["unreadable"]]
        except (KeyError, TypeError, ValueError):
            raise JournalError(f"batch {b} of the journal {journal.directory} is malformed; remove the journal to "
                               f"start again") from None
        for i in [r.index for r in records] + [i for i, _ in unreadable]:
            if i in seen or i not in expected:
                raise JournalError(f"batch {b} of the journal {journal.directory} holds image {i}, not one of its "
                                   f"own; remove the journal to start again")
            seen.add(i)
        if seen != expected or any(r.label != labels[r.index] for r in records):
            raise JournalError(f"batch {b} of the journal {journal.directory} does not account for its images; "
                               f"remove the journal to start again")
        for i, reason in unreadable:
            figs.unreadable_total += 1
            if len(figs.unreadable) < LISTED:
                figs.unreadable.append({**describe(i), "reason": reason})
        for rec in records:
            figs.images += 1
            figs.scale = max(figs.scale, rec.scale)
            ref_top5 = rec.top5[REFERENCE]
            differs = [n for n in frameworks if figs.tallies[n].add(rec, ref_top5)]
            cls = rec.label if rec.label is not None else ref_top5[0]
            row = figs.per_class.setdefault(cls, [0] * (1 + len(frameworks)))
            row[0] += 1
            for k, n in enumerate(frameworks):
                row[1 + k] += int(rec.top5[n][0] == ref_top5[0])
            if differs:
                figs.disagreements_total += 1
                if len(figs.disagreements) < LISTED:
                    figs.disagreements.append({**describe(rec.index), "label": rec.label,
                                               "reference_top1": ref_top5[0],
                                               "top1": {n: rec.top5[n][0] for n in others}})
            if writer is not None:
                row_ = [rec.index, describe(rec.index)["image"], "" if rec.label is None else rec.label, ref_top5[0]]
                for n in frameworks:
                    err = rec.max_abs[n]
                    rel = err / rec.scale if rec.scale > 0 else err
                    row_ += [rec.top5[n][0], " ".join(map(str, rec.top5[n])), repr(err), repr(rel)]
                writer.writerow(row_)
    return figs


def framework_dicts(figs: Figures, labelled: bool, rtol: float, atol: float) -> list[dict[str, Any]]:
    out = []
    for t in figs.tallies.values():
        within = t.finite and t.max_abs <= atol + rtol * figs.scale
        rel = (t.max_abs / figs.scale if figs.scale > 0 else t.max_abs) if t.finite else float("nan")
        out.append({
            "name": t.name, "reference": t.name == REFERENCE, "images": t.images,
            "top1_accuracy": _ratio(t.top1_correct, t.images) if labelled else None,
            "top5_accuracy": _ratio(t.top5_correct, t.images) if labelled else None,
            "top1_agreement": _ratio(t.top1_agree, t.images), "top5_agreement": _ratio(t.top5_agree, t.images),
            "max_abs": _num(t.max_abs) if t.finite else None, "max_rel": _num(rel), "within_tolerance": within,
            "counts": {"top1_correct": t.top1_correct if labelled else None,
                       "top5_correct": t.top5_correct if labelled else None,
                       "top1_agree": t.top1_agree, "top5_agree": t.top5_agree},
        })
    return out


def render_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if 0 < abs(x) < 1 or x == 0 else f"{x:g}"


def render_table(data: dict[str, Any]) -> str:
    """The terminal summary: one row per framework, the verdict last."""
    lines = [f"evaluate {data['model']}: {data['images']} images, engine {data['engine']} "
             f"({data['workers']} worker{'s' if data['workers'] != 1 else ''}), {data['seconds']:.1f} s"
             + (f" ({data['images_per_second']:.1f} images/s)" if data.get("images_per_second") else "")]
    head = f"{'framework':<10} {'top-1 acc':>9} {'top-5 acc':>9} {'top-1 agree':>11} {'top-5 agree':>11} " \
           f"{'max abs':>9} {'max rel':>9}"
    lines.append(head)
    for f in data["frameworks"]:
        lines.append(f"{f['name']:<10} {_fmt(f['top1_accuracy']):>9} {_fmt(f['top5_accuracy']):>9} "
                     f"{_fmt(f['top1_agreement']):>11} {_fmt(f['top5_agreement']):>11} "
                     f"{'-' if f['max_abs'] is None else format(f['max_abs'], '.1e'):>9} "
                     f"{'-' if f['max_rel'] is None else format(f['max_rel'], '.1e'):>9}")
    if data["disagreements_total"]:
        lines.append(f"{data['disagreements_total']} image(s) where a framework's top-1 differs from the reference's"
                     + (f" (first {len(data['disagreements'])} in the report)"
                        if data["disagreements_total"] > len(data["disagreements"]) else "")
                     + ": " + ", ".join(d["image"] for d in data["disagreements"][:3])
                     + (", ..." if data["disagreements_total"] > 3 else ""))
    if data["unreadable_total"]:
        first = data["unreadable"][0]
        lines.append(f"{data['unreadable_total']} image(s) could not be decoded and are left out of the figures; "
                     f"first: {first['reason']}")
    lines.append(verdict(data))
    return "\n".join(lines)


def verdict(data: dict[str, Any]) -> str:
    if data["passed"]:
        return f"PASS: every framework within rtol {data['rtol']:g} of the reference over {data['images']} images"
    return "FAIL: " + "; ".join(data["failures"])


def render_html(data: dict[str, Any], figs: Figures) -> str:
    """A self-contained page: the per-image error distribution of every framework (inline SVG bars) and
    the classes with the lowest top-1 agreement."""
    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>caffe2x evaluate: {esc(data['model'])}</title>",
             "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}</style>",
             f"<h1>caffe2x evaluate</h1><p>{esc(data['model'])}: {data['images']} images, "
             f"{esc(verdict(data))}</p><table><tr><th>framework</th><th>top-1 acc</th><th>top-5 acc</th>"
             f"<th>top-1 agree</th><th>top-5 agree</th><th>max abs</th><th>max rel</th></tr>"]
    for f in data["frameworks"]:
        parts.append("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in (
            f["name"], _fmt(f["top1_accuracy"]), _fmt(f["top5_accuracy"]), _fmt(f["top1_agreement"]),
            _fmt(f["top5_agreement"]), f["max_abs"], f["max_rel"])) + "</tr>")
    parts.append("</table><h2>Per-image max relative logit error</h2>")
    labels = ["0"] + [f"1e{HIST_LO + HIST_STEP * k:g}" for k in range(len(next(iter(figs.tallies.values())).hist) - 1)]
    for t in figs.tallies.values():
        if t.name == REFERENCE:
            continue
        top = max(t.hist) or 1
        width = 18
        bars = "".join(
            f"<rect x='{k * width}' y='{100 - 100 * c / top:.1f}' width='{width - 2}' height='{100 * c / top:.1f}' "
            f"fill='#4a7'><title>{labels[k]}..: {c} images</title></rect>" for k, c in enumerate(t.hist))
        parts.append(f"<h3>{esc(t.name)}</h3><svg width='{width * len(t.hist)}' height='120'>{bars}"
                     f"<text x='0' y='115' font-size='10'>0</text><text x='{width * len(t.hist) - 30}' y='115' "
                     f"font-size='10'>1e0</text></svg>")
    worst = sorted(figs.per_class.items(), key=lambda kv: (min(kv[1][1:]) / kv[1][0], kv[0]))[:20]
    parts.append("<h2>Classes with the lowest top-1 agreement</h2><table><tr><th>class</th><th>images</th>"
                 + "".join(f"<th>{esc(n)}</th>" for n in figs.tallies) + "</tr>")
    for cls, row in worst:
        parts.append(f"<tr><td>{cls}</td><td>{row[0]}</td>"
                     + "".join(f"<td>{row[1 + k] / row[0]:.4f}</td>" for k in range(len(figs.tallies))) + "</tr>")
    parts.append("</table>")
    return "\n".join(parts) + "\n"


def check_outputs(paths: Sequence[tuple[str, Any]]) -> None:
    """The report files can be written (their folders exist) -- checked before any work."""
    from pathlib import Path

    for what, p in paths:
        if p is not None and not Path(p).resolve().parent.is_dir():
            raise Caffe2xError(f"cannot write the {what} {p}: folder {Path(p).parent} does not exist")
