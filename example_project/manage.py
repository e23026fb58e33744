#!/usr/bin/env python
"""Django's command-line utility for the django-multismtp example project."""

import os
import sys
from pathlib import Path

# The repository root, so `django_multismtp` imports even when the package is not installed.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(1, str(REPO_ROOT))


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
