"""Sphinx configuration for the django-multismtp documentation.

Built with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (tox env
``docs``). No intersphinx: the build must not need the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

import django_multismtp  # noqa: E402

project = "django-multismtp"
author = "django-multismtp developers"
copyright = "django-multismtp developers"
version = django_multismtp.__version__
release = django_multismtp.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []
default_role = "literal"
highlight_language = "python"
pygments_style = "sphinx"
# Quote messages exactly as people see them (no typographic quotes).
smartquotes = False

html_theme = "furo"
html_title = f"django-multismtp {release}"
html_static_path = ["_static"]


# -- hint texts, quoted from the code -------------------------------------------------
# ``.. multismtp-hint:: credentials`` renders replies.HINTS["credentials"] as a block
# quote, so the troubleshooting pages always show the text people actually see. An
# unknown key is an error, which -W turns into a failed build.

from docutils import nodes  # noqa: E402
from sphinx.util.docutils import SphinxDirective  # noqa: E402


class HintDirective(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from django_multismtp.replies import HINTS

        key = self.arguments[0]
        if key not in HINTS:
            raise self.error(f"Unknown hint {key!r}; known: {', '.join(HINTS)}")
        quote = nodes.block_quote(classes=["multismtp-hint"])
        quote += nodes.paragraph(text=HINTS[key])
        return [quote]


def setup(app):  # type: ignore[no-untyped-def]
    app.add_directive("multismtp-hint", HintDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
