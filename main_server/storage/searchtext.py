"""Search text, the same for both engines: what the full-text index is fed for a message, and
what the words of a query become. Pure functions, no I/O.

Chinese and Japanese are written without spaces between words, and Korean attaches particles
to its words, so a tokenizer that splits on spaces and punctuation sees a whole sentence as one
word. A run of their letters (CJK below) is therefore indexed as its overlapping pairs of
characters followed by its last character alone: 我们明天开会 → 我们 们明 明天 天开 开会 会. A query
word of two or more such characters is the phrase of its pairs (开会; 明天开会 = 明天 天开 开会), one
character is a prefix of the pairs (会 → 会*): every part of a run is found, at any position. All
other text passes through unchanged to the engine's tokenizer (SQLite unicode61 with diacritics
folded, PostgreSQL 'simple'), so Latin-script words are matched exactly as before.

CJK_RANGES is part of the stored index (SQLite deletes an edited message's old entry by
recomputing what it was fed; PostgreSQL's index expression is built from it): changing it
needs a migration that rebuilds both indexes."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# The letters of Han, kana, Hangul and Bopomofo (Unicode 14 letters and numbers in their blocks:
# no punctuation, no combining marks), as code point ranges. Fixed, never computed from the
# running Python's Unicode tables: the index must not change under an interpreter upgrade.
CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x1100, 0x11FF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3031, 0x3035), (0x3038, 0x303C),
    (0x3041, 0x3096), (0x309D, 0x309F), (0x30A1, 0x30FA), (0x30FC, 0x30FF), (0x3105, 0x312F),
    (0x3131, 0x318E), (0x31A0, 0x31BF), (0x31F0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF),
    (0xA960, 0xA97C), (0xAC00, 0xD7A3), (0xD7B0, 0xD7C6), (0xD7CB, 0xD7FB), (0xF900, 0xFA6D),
    (0xFA70, 0xFAD9), (0xFF66, 0xFF9F), (0xFFA0, 0xFFBE), (0xFFC2, 0xFFC7), (0xFFCA, 0xFFCF),
    (0xFFD2, 0xFFD7), (0xFFDA, 0xFFDC), (0x1B000, 0x1B122), (0x1B150, 0x1B152), (0x1B164, 0x1B167),
    (0x20000, 0x2A6DF), (0x2A700, 0x2B738), (0x2B740, 0x2B81D), (0x2B820, 0x2CEA1), (0x2CEB0, 0x2EBE0),
    (0x2F800, 0x2FA1D), (0x30000, 0x3134A),
)
# The ranges as the inside of a bracket expression, in literal characters: the same text is a
# Python and a PostgreSQL (ARE) character class.
CJK_CLASS = "".join(f"{chr(a)}-{chr(b)}" for a, b in CJK_RANGES)
_CJK_RUN = re.compile(f"[{CJK_CLASS}]+")

# A prefix query (`meet*`) needs this many letters or digits before the `*`: shorter ones match
# too many words to be worth walking. CJK needs none: its characters are found anywhere already.
PREFIX_MIN = 3

_TOKEN = re.compile(r"[^\W_]+")  # letters and digits: unicode61 splits on "_" too


def grams(run: str) -> list[str]:
    """A CJK run as it is indexed: its overlapping pairs, then its last character alone."""
    return [run[i:i + 2] for i in range(len(run))]


def index_text(text: str) -> str:
    """What the index is fed for a message's text: each CJK run replaced by its grams (spaced
    apart from the text around it), everything else as it is."""
    if text.isascii():  # most messages: nothing to look for
        return text
    return _CJK_RUN.sub(lambda m: " " + " ".join(grams(m.group())) + " ", text)


def fold(text: str) -> list[str]:
    """The words of a text about as SQLite's unicode61 tokenizer (remove_diacritics 2) sees them."""
    if text.isascii():
        return _TOKEN.findall(text.lower())
    plain = "".join(ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch))
    return _TOKEN.findall(plain)


@dataclass(frozen=True, slots=True)
class Term:
    """One query word as the index sees it: chunks of text that are consecutive there (each one
    tokenised by the engine, a phrase together), the last token a prefix or not."""

    chunks: tuple[str, ...]
    prefix: bool

    @property
    def text(self) -> str:
        return " ".join(self.chunks)


def _pieces(word: str) -> list[tuple[bool, str]]:
    """The word split into CJK runs (True) and the text between them (False), in order."""
    out: list[tuple[bool, str]] = []
    at = 0
    for m in _CJK_RUN.finditer(word):
        if m.start() > at:
            out.append((False, word[at:m.start()]))
        out.append((True, m.group()))
        at = m.end()
    if at < len(word):
        out.append((False, word[at:]))
    return out


def term(word: str) -> Term | None:
    """A query word (letters and digits, `*` at the end for a prefix) as a Term; None when it
    holds nothing the index has (a word of punctuation)."""
    star = word.endswith("*")
    pieces = _pieces(word.rstrip("*"))
    chunks: list[str] = []
    prefix = False
    for i, (cjk, piece) in enumerate(pieces):
        last = i == len(pieces) - 1
        if not cjk:
            chunks.append(piece)
            prefix = last and star
        elif not last:
            chunks.extend(grams(piece))  # the run ends here in the text too: its last character follows
        elif len(piece) == 1:
            chunks.append(piece)
            prefix = True  # one character: the start of any pair, or a run's last one
        else:
            chunks.extend(piece[j:j + 2] for j in range(len(piece) - 1))
    if not fold(" ".join(chunks)):
        return None
    return Term(tuple(chunks), prefix)


def terms(words: list[str]) -> list[Term]:
    """The words' Terms, each once, in order; those with nothing to find left out."""
    return [t for t in dict.fromkeys(term(w) for w in words) if t is not None]


def prefix_problem(word: str) -> str:
    """Why a word ending in `*` is no prefix query, or "" when it is one."""
    body = word.rstrip("*")
    pieces = _pieces(body)
    if pieces and pieces[-1][0]:
        return ""
    tokens = fold(body)
    if not tokens or len(tokens[-1]) < PREFIX_MIN or word.count("*") > 1:
        return f"a prefix search needs at least {PREFIX_MIN} letters or digits before one `*` (meet*)"
    return ""
