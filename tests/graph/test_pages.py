"""Mapped views hand their written pages back to the kernel, and never lose a page this process wrote."""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from caffe2x.graph.pages import mapping, release, release_all, release_map

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/pagemap"), reason="needs Linux /proc/self/pagemap")
PAGE = mmap.PAGESIZE


def _mapped(tmp_path: Path, pages: int = 64) -> tuple[mmap.mmap, np.ndarray, np.ndarray]:
    values = np.arange(pages * PAGE // 4, dtype="<f4")
    path = tmp_path / "w.bin"
    path.write_bytes(values.tobytes())
    with open(path, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return mm, np.frombuffer(mm, dtype="<f4").reshape(pages, -1), values.reshape(pages, -1)


def _resident(arr: np.ndarray) -> int:
    start = arr.__array_interface__["data"][0] // PAGE
    with open("/proc/self/pagemap", "rb", buffering=0) as f:
        entries = np.frombuffer(os.pread(f.fileno(), 8 * (arr.nbytes // PAGE), 8 * start), dtype="<u8")
    return int(np.count_nonzero(entries >> np.uint64(63)))


def test_released_pages_leave_the_resident_set_and_read_back_the_same(tmp_path: Path) -> None:
    mm, view, values = _mapped(tmp_path)
    assert mapping(view[3:9]) is mm and mapping(values) is None
    assert float(view.sum()) == float(values.sum()) and _resident(view) == view.shape[0]
    assert release(view[3:9]) and _resident(view) == view.shape[0] - 6
    assert release_map(mm) and _resident(view) == 0
    assert np.array_equal(view, values)  # faulted back in from the page cache


def test_a_written_page_keeps_the_whole_range_resident(tmp_path: Path) -> None:
    mm, view, values = _mapped(tmp_path)
    view[5, 0] = -1.0  # a private copy of page 5: dropping it would bring the file's value back
    float(view.sum())
    assert not release_map(mm) and not release(view[4:7])
    assert view[5, 0] == -1.0 and np.array_equal(view[:5], values[:5])
    assert release(view[7:]) and _resident(view[7:]) == 0  # a range without written pages still goes


def test_release_all_drops_every_mapped_array_but_one_with_a_written_page(tmp_path: Path) -> None:
    mm, view, values = _mapped(tmp_path)
    parts = [view[0:4], view[4:8], view[8:], values]
    view[5, 0] = -1.0  # written: its array keeps its pages
    float(view.sum())
    assert release_all(parts) == 2  # the heap array has nothing to release
    assert _resident(view[0:4]) == 0 and _resident(view[8:]) == 0 and _resident(view[4:8]) == 4
    assert view[5, 0] == -1.0 and np.array_equal(view[:4], values[:4]) and np.array_equal(view[8:], values[8:])


def test_a_file_map_keeps_its_file_open_until_its_last_view_goes(tmp_path: Path) -> None:
    import gc

    from caffe2x.graph.pages import map_file

    path = tmp_path / "w.bin"
    path.write_bytes(np.arange(4 * PAGE // 4, dtype="<f4").tobytes())
    mm = map_file(path)
    fd = mm.fd
    view = np.frombuffer(mm, dtype="<f4")[10:20]
    del mm
    gc.collect()
    assert os.fstat(fd).st_size == 4 * PAGE  # still open: the view keeps the map alive
    del view
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_file_span_says_where_an_unwritten_view_is_in_its_file(tmp_path: Path) -> None:
    from caffe2x.graph.pages import file_span, map_file, unwritten

    values = np.arange(8 * PAGE // 4, dtype="<f4")
    path = tmp_path / "w.bin"
    path.write_bytes(values.tobytes())
    mm = map_file(path)
    view = np.frombuffer(mm, dtype="<f4", count=300, offset=4 * 1000).reshape(3, 100)
    fd, offset = file_span(view)  # type: ignore[misc]
    assert offset == 4000 and os.pread(fd, view.nbytes, offset) == view.tobytes() == values[1000:1300].tobytes()
    assert file_span(view[:, ::2]) is None and file_span(values) is None  # not contiguous; not mapped
    plain = _mapped(tmp_path)[1]  # an mmap without its file: nothing to read from
    assert file_span(plain) is None
    assert unwritten(mm)
    view[1, 1] = 0.5  # now a private page: the view no longer shows the file
    assert not unwritten(mm)
