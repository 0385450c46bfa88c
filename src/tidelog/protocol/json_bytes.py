"""Bytes in JSON as the HTTP API and push deliveries give them: UTF-8 text when the bytes are
printable UTF-8, else base64, with the encoding named beside ("text" | "base64")."""

from __future__ import annotations

import base64
import re

# C0 controls other than tab, newline and carriage return mark bytes as binary.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def bytes_to_json(data: bytes | None, force_base64: bool = False) -> tuple[str | None, str]:
    """(text or base64 or None, "text" | "base64")."""
    if data is None:
        return None, "text"
    if not force_base64:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            if not _CONTROL.search(text):
                return text, "text"
    return base64.b64encode(data).decode("ascii"), "base64"
