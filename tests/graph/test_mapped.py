"""caffe2x.graph.mapped: the pages of views of a mapped file go back to the system, the values stay."""
from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from caffe2x.caffe.wire import map_file
from caffe2x.graph import mapped


def _resident_pages(mm: mmap.mmap, offset: int, length: int) -> int:
    """Pages of ``mm[offset:offset + length]`` mapped into this process now (``/proc/self/pagemap``'s
    present bit; page-cache residency, which mincore reports, is not the process's)."""
    start = np.frombuffer(mm, np.uint8, count=1).ctypes.data + offset
    pages = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(start // mmap.PAGESIZE * 8)
        entries = np.frombuffer(f.read(pages * 8), "<u8")
    return int(np.count_nonzero(entries >> np.uint64(63)))


@pytest.fixture()
def mapped_floats(tmp_path: Path) -> tuple[mmap.mmap, np.ndarray]:
    values = np.arange(1 << 20, dtype="<f4")  # 4 MiB
    path = tmp_path / "w.bin"
    with open(path, "wb") as f:
        f.write(values.tobytes())
        f.flush()
        os.fsync(f.fileno())  # clean pages, as a caffemodel's are (a dirty page waits for its writeback)
    mm = map_file(path)
    if mm is None:
        pytest.skip("no mmap here")
    return mm, values


def test_a_view_of_a_mapped_file_is_found_with_its_offset(mapped_floats) -> None:  # type: ignore[no-untyped-def]
    mm, _ = mapped_floats
    view = np.frombuffer(mm, "<f4", count=1000, offset=8192).reshape(10, 100)
    assert mapped.mapping_of(view) == (mm, 8192)
    assert mapped.mapping_of(view.T) == (mm, 8192)
    assert mapped.mapping_of(np.ones(10, np.float32)) is None
    assert mapped.release([np.ones(10, np.float32)]) == 0


@pytest.mark.skipif(mapped.PAGEOUT is None or not Path("/proc/self/pagemap").exists(),
                    reason="no MADV_PAGEOUT or pagemap on this platform")
def test_released_pages_leave_the_process_and_the_values_are_unchanged(mapped_floats) -> None:  # type: ignore[no-untyped-def]
    mm, values = mapped_floats
    view = np.frombuffer(mm, "<f4", count=values.size).reshape(1024, 1024).T  # a transposed view, as Keras reads
    assert float(view.sum(dtype=np.float64)) == float(values.sum(dtype=np.float64))  # every page read in
    assert _resident_pages(mm, 0, values.nbytes) == values.nbytes // mmap.PAGESIZE
    asked = mapped.release([view])
    if asked == 0:
        pytest.skip("the kernel refuses MADV_PAGEOUT")
    assert asked == values.nbytes
    assert _resident_pages(mm, 0, values.nbytes) < values.nbytes // mmap.PAGESIZE // 2
    assert np.array_equal(view.T.reshape(-1), values)  # read again from the file


@pytest.mark.skipif(mapped.PAGEOUT is None, reason="no MADV_PAGEOUT on this platform")
def test_a_page_an_array_wrote_to_keeps_what_was_written(mapped_floats) -> None:  # type: ignore[no-untyped-def]
    mm, values = mapped_floats
    view = np.frombuffer(mm, "<f4", count=values.size)
    view[5] = -1.0  # a private copy of that page now
    mapped.release([view])
    assert view[5] == -1.0 and view[6] == values[6]
