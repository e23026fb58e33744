"""Edit the top-level headers of a rendered message without touching anything else.

Queued mail is stored as the bytes Django rendered, with the caller's own From. The
account that finally sends it may put its own sender in From and Reply-To (as the
direct path does when the message uses the site's default From). Re-parsing and
re-generating the whole message could re-wrap or re-encode the body and attachments;
replacing a few header lines cannot.
"""

from __future__ import annotations

import email.policy

_FOLD = email.policy.SMTP.clone(max_line_length=78)


def split_head(data: bytes) -> tuple[bytes, bytes, bytes]:
    """``(header block, line ending, rest)``; the rest starts with the blank line."""
    candidates = [(i, sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) != -1]
    if not candidates:
        eol = b"\r\n" if b"\r\n" in data else b"\n"
        return data.rstrip(b"\r\n"), eol, eol + eol
    index, sep = min(candidates)
    eol = sep[: len(sep) // 2]
    return data[:index], eol, data[index:]


def header_fields(head: bytes, eol: bytes) -> list[bytes]:
    """The header block as one bytes item per field, continuation lines included."""
    fields: list[bytes] = []
    for line in head.split(eol):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += eol + line
        elif line:
            fields.append(line)
    return fields


def field_name(field: bytes) -> str:
    return field.partition(b":")[0].decode("ascii", "replace").strip().lower()


def get_header(data: bytes, name: str) -> str | None:
    """The raw (unfolded, undecoded) value of the first ``name`` header, or None."""
    head, eol, _rest = split_head(data)
    for field in header_fields(head, eol):
        if field_name(field) == name.lower():
            value = field.partition(b":")[2].replace(eol, b"")
            return value.decode("utf-8", "replace").strip()
    return None


def replace_headers(data: bytes, values: dict[str, str | None]) -> bytes:
    """Return ``data`` with each named header set to the value (None removes it).

    A replaced header keeps the position of its first occurrence; a new one goes at the
    end of the header block. Values are encoded and folded as an SMTP message needs
    (RFC 2047 for non-ASCII display names).
    """
    head, eol, rest = split_head(data)
    wanted = {name.lower(): (name, value) for name, value in values.items()}
    done: set[str] = set()
    out: list[bytes] = []
    for field in header_fields(head, eol):
        key = field_name(field)
        if key not in wanted:
            out.append(field)
            continue
        if key in done:
            continue
        done.add(key)
        name, value = wanted[key]
        if value is not None:
            out.append(_fold(name, value, eol))
    for key, (name, value) in wanted.items():
        if key not in done and value is not None:
            out.append(_fold(name, value, eol))
    return eol.join(out) + rest


def _fold(name: str, value: str, eol: bytes) -> bytes:
    if "\r" in value or "\n" in value:
        raise ValueError(f"Header {name!r} may not contain line breaks")
    folded: bytes = _FOLD.fold_binary(name, value)
    return folded.rstrip(b"\r\n").replace(b"\r\n", eol)
