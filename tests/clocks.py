"""A clock that child processes share with the test: the time is read from a file.

Set ``MULTISMTP_TEST_CLOCK_FILE`` in a child's environment and ``tests.settings_subprocess``
makes ``tests.clocks.file_clock`` its ``MULTISMTP["CLOCK"]``; the test moves time for
every process at once by rewriting the file. Nobody sleeps to let a lease expire.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path


def file_clock() -> dt.datetime:
    text = Path(os.environ["MULTISMTP_TEST_CLOCK_FILE"]).read_text().strip()
    return dt.datetime.fromisoformat(text)


def set_time(path: Path, when: dt.datetime) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(when.isoformat())
    tmp.replace(path)  # atomic: a reader never sees half a timestamp
