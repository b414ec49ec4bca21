"""Text that another user or a server chose, made safe to show: one function for every client
(the terminal and the GUI), so a name or file name reads the same everywhere.

A raw ESC, CSI or OSC sequence could recolour or clear a terminal, move the cursor or set the
window title; a bidi override or isolate makes a name or a file name read differently than it is
("invoice\u202efdp.exe" shows as "invoiceexe.pdf"), in a terminal and in the GUI alike.
"""

from __future__ import annotations

import unicodedata

# Characters that change how the rest of the line is displayed without being visible
# themselves: bidi embeddings/overrides/isolates and marks, and Unicode line/paragraph separators.
INVISIBLE_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)


def _escape_char(c: str) -> str:
    o = ord(c)
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def sanitize(text: str) -> str:
    """`text` made safe to show: every C0/C1 control character (ESC included, which defuses all
    ANSI sequences), DEL and invisible bidi/line-separator characters become visible escapes like
    \\x1b or \\u202e. A tab becomes a space. Printable text, emoji and scripts pass unchanged."""
    out: list[str] = []
    for c in text:
        if c == "\t":
            out.append(" ")
        elif c in INVISIBLE_CONTROLS or unicodedata.category(c) == "Cc":
            # Cc is exactly C0 (0x00-0x1f), DEL and C1 (0x80-0x9f).
            out.append(_escape_char(c))
        else:
            out.append(c)
    return "".join(out)
