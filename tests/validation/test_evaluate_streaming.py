"""Memory stays flat however long the image list: the figures are counted from the journal one batch at a
time, and the lists the report keeps are capped (every image is in ``--per-image``)."""
from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

from caffe2x.validation.evaluate.journal import Journal
from caffe2x.validation.evaluate.report import LISTED, count


def _peak_counting(tmp_path: Path, batches: int, size: int = 10) -> tuple[int, int, int]:
    """(peak bytes while counting, images counted, disagreements) over a journal of ``batches`` batches
    whose every image disagrees (so the disagreement list would grow without its cap)."""
    book, _ = Journal.open(tmp_path / f"j{batches}", {"run": batches}, batches * size, batches, resume=False,
                           force=False)
    items = []
    for b in range(batches):
        rows = [(b * size + k, f"img{b * size + k}.png", 1) for k in range(size)]
        records = [{"i": i, "label": 1, "top5": {"numpy": [1, 2, 3, 4, 5], "torch": [2, 1, 3, 4, 5]},
                    "max_abs": {"numpy": 0.0, "torch": 0.5}, "scale": 10.0} for i, _p, _l in rows]
        book.record(b, {"records": records, "unreadable": []})
        items.append(rows)

    def describe(i: int) -> dict:
        return {"index": i, "image": f"img{i}.png", "line": i + 1}

    out = io.StringIO()
    tracemalloc.start()
    try:
        figs = count(book, ["numpy", "torch"], items, describe, None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del out
    return peak, figs.images, figs.disagreements_total, len(figs.disagreements)  # type: ignore[return-value]


def test_counting_ten_times_the_images_takes_no_more_memory(tmp_path: Path) -> None:
    small = _peak_counting(tmp_path, 30)
    large = _peak_counting(tmp_path, 300)
    assert small[1:] == (300, 300, LISTED) and large[1:] == (3000, 3000, LISTED)
    assert large[0] < 1.5 * small[0] + 64 * 1024, (small[0], large[0])
