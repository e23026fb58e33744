"""Settings for a ``manage.py`` run in a child process of a test (tests/test_commands.py).

The test settings module of the parent run (``tests.settings`` or ``tests.settings_pg``),
with the database NAME pointed at the parent's *test* database, so the child sees the
accounts a ``transaction=True`` test committed. Both come from environment variables the
test sets.
"""

import importlib
import os

_base = importlib.import_module(os.environ.get("MULTISMTP_SUBPROCESS_BASE", "tests.settings"))
globals().update({name: value for name, value in vars(_base).items() if name.isupper()})

DATABASES = {
    "default": {
        **_base.DATABASES["default"],
        "NAME": os.environ["MULTISMTP_SUBPROCESS_DB"],
    }
}

if os.environ.get("MULTISMTP_TEST_CLOCK_FILE"):
    MULTISMTP = {**_base.MULTISMTP, "CLOCK": "tests.clocks.file_clock"}
