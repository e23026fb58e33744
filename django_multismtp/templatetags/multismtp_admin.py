"""Breadcrumbs for the app's own admin pages, in the markup of the running Django line.

Django puts the breadcrumbs' wrapper element *inside* ``{% block breadcrumbs %}`` and
changed it in 6.1 (``<div>`` with ``›`` separators became ``<ol>`` of ``<li>``, and 6.1's
CSS styles only the list). A page that copies either form is unstyled on the other line,
so our pages extend ``django_multismtp/admin_page.html``, which opens and closes the trail
with these tags, and fill only ``{% block crumbs %}`` with ``{% crumb %}``s.
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..compat import ADMIN_BREADCRUMBS_AS_LIST

register = template.Library()


def _wrapper() -> str:
    return "ol" if ADMIN_BREADCRUMBS_AS_LIST else "div"


@register.simple_tag
def crumbs_start() -> SafeString:
    return format_html('<{} class="breadcrumbs">', _wrapper())


@register.simple_tag
def crumbs_end() -> SafeString:
    return format_html("</{}>", _wrapper())


@register.simple_tag
def crumb(label: object, url: str = "", first: bool = False) -> SafeString:
    """One step of the trail: a link, or (without ``url``) the current page."""
    if ADMIN_BREADCRUMBS_AS_LIST:
        if url:
            return format_html('<li><a href="{}">{}</a></li>', url, label)
        return format_html('<li aria-current="page">{}</li>', label)
    separator = "" if first else format_html(" {} ", "\u203a")
    if url:
        return format_html('{}<a href="{}">{}</a>', separator, url, label)
    return format_html("{}{}", separator, label)
