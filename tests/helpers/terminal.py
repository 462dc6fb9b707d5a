"""A command's stderr as a user's terminal sees it: through a real pseudo-terminal, for the tests that
check progress bars are drawn there (and only there)."""
from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import termios
from collections.abc import Mapping, Sequence


def stderr_on_a_terminal(cmd: Sequence[str], *, env: Mapping[str, str] | None = None, columns: int = 100,
                         timeout: float = 600) -> tuple[int, bytes]:
    """(exit code, stderr bytes) of ``cmd`` run with stderr on a pseudo-terminal of 24 x ``columns``
    (a real terminal has a size: tqdm draws nothing on a 0-column one) and stdout discarded."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    try:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=slave,
                                env=None if env is None else dict(env))
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout=timeout), b"".join(chunks)
    finally:
        os.close(master)
