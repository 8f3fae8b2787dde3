"""The agent protocol: system prompts, tag grammar, span parsing and answer extraction (docs/method.md §1).

A trajectory is a sequence of pieces, each either *sampled* by the policy or *inserted* by the system
(a ``<retrieve>`` block, a CDIR case, a forced ``<answer>`` opener, the closing EOS). Parsing works on
those pieces, so an inserted block is one opaque ``retrieve`` span whatever characters its passages hold:
a passage with ``<`` or ``>`` (or even a protocol tag) can never break the grammar of the model's own text
(docs/method.md §8). :func:`parse_text` parses a flat string (e.g. an evaluation transcript) with the same
grammar; inside ``<retrieve>`` it skips to the closing tag, and :func:`retrieve_block` neutralises protocol
tags in passage text so that a passage cannot close the block early.

Grammar of a well-formed completion (whitespace allowed between blocks)::

    ( <think>T</think> ( <query>Q</query> <retrieve>…</retrieve> )? )+  <answer>A</answer>

with T, Q, A non-empty. A direct answer (one think, then the answer) is well-formed. A system-initiated
inserted block (a RAG pre-retrieval, a CDIR case) may stand between blocks; a ``<retrieve>`` the model
writes itself never passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

QUERY_OPEN, QUERY_CLOSE = "<query>", "</query>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
RETRIEVE_OPEN, RETRIEVE_CLOSE = "<retrieve>", "</retrieve>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
PROTOCOL_TOKENS = (
    THINK_OPEN,
    THINK_CLOSE,
    QUERY_OPEN,
    QUERY_CLOSE,
    RETRIEVE_OPEN,
    RETRIEVE_CLOSE,
    ANSWER_OPEN,
    ANSWER_CLOSE,
)
OPTION_LETTERS = "ABCDEFGHIJ"

_IMAGE_SENTENCES = (
    "You are given a medical image and a question about it. First observe the image carefully and "
    "describe what you see. "
)
_TEXT_SENTENCES = "You are given a medical question. "
_RETRIEVAL_SENTENCES = (
    "If you need medical knowledge, you may search for it: write one focused search query inside "
    "<query> and </query>. An external agent then returns the top results inside <retrieve> and "
    "</retrieve>. Continue reasoning with them, and query again if you still need to. "
    "You may also answer directly without retrieval. "
)
_NO_RETRIEVAL_SENTENCES = "Answer from your own knowledge. "


def system_prompt(has_image: bool, retrieval: bool = True) -> str:
    """The system prompt (paper Table 10, in substance). ``has_image=False`` is the text-only variant,
    which drops the image sentences; ``retrieval=False`` is the direct-answer variant."""
    return (
        "You are a medical expert. "
        + (_IMAGE_SENTENCES if has_image else _TEXT_SENTENCES)
        + "Think step by step inside <think> and </think>. "
        + (_RETRIEVAL_SENTENCES if retrieval else _NO_RETRIEVAL_SENTENCES)
        + "Give the final answer inside <answer> and </answer>: the option letter for a multiple-choice "
        "question, otherwise a short answer."
    )


def format_question(question: str, options: Sequence[str] | None = None, context: str | None = None) -> str:
    """The user turn: optional context, the question, and the options as ``A. text`` lines."""
    parts = [context.strip()] if context else []
    parts.append(question.strip())
    if options:
        parts.append("\n".join(f"{OPTION_LETTERS[i]}. {o}" for i, o in enumerate(options)))
    return "\n".join(parts)


def build_messages(
    question: str,
    options: Sequence[str] | None = None,
    *,
    has_image: bool = False,
    context: str | None = None,
    retrieval: bool = True,
    system: str | None = None,
) -> list[dict]:
    """Conversational prompt in the layout TRL expects (system + user), content as typed lists. An image row
    gets an ``{"type": "image"}`` placeholder first in the user content; TRL (or the caller) fills in the
    image. ``system`` replaces :func:`system_prompt` (e.g. a compact prompt for a synthetic benchmark)."""
    text = format_question(question, options, context)
    user = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": text}]
    # typed content everywhere: one Arrow schema for text-only and image rows of the same dataset
    return [
        {
            "role": "system",
            "content": [{"type": "text", "text": system or system_prompt(has_image, retrieval)}],
        },
        {"role": "user", "content": user},
    ]


_TAG_IN_PASSAGE = re.compile(r"</?(?:think|query|retrieve|answer)>", re.IGNORECASE)


def neutralize(text: str) -> str:
    """Passage text with protocol tags written as ``[tag]``/``[/tag]``: a passage cannot open or close a
    block. Other ``<``/``>`` characters (``p < 0.05``, ``<3 mm``) are kept as they are."""
    return _TAG_IN_PASSAGE.sub(lambda m: "[" + m.group(0)[1:-1] + "]", text)


def passage_text(title: str | None, text: str | None) -> str:
    """One passage as shown to the policy: ``title. text`` (or the text alone)."""
    body = " ".join((text or "").split())
    return f"{title}. {body}" if title else body


def retrieve_block(passages: Sequence[str]) -> str:
    """The system-inserted block: ``<retrieve>`` + ``(1) p1 (2) p2 ...`` + ``</retrieve>``, one per line.
    No passages gives an explicit "no results" line, so the policy always sees a closed block."""
    lines = [f"({i}) {neutralize(p)}" for i, p in enumerate(passages, start=1)] or ["(no results)"]
    return "\n" + RETRIEVE_OPEN + "\n" + "\n".join(lines) + "\n" + RETRIEVE_CLOSE + "\n"


@dataclass(frozen=True)
class Span:
    """One block of a trajectory: ``kind`` in think/query/retrieve/answer, or ``text`` for anything
    outside a block (stray text breaks the grammar unless it is whitespace). ``inserted`` is True for
    system-inserted blocks."""

    kind: str
    text: str
    inserted: bool = False
    closed: bool = True


_TAG_RE = re.compile(r"<(/?)(think|query|retrieve|answer)>")


def _parse_model_text(text: str) -> list[Span]:
    """Spans of text the model wrote (whitespace between blocks is dropped). Only the four protocol tags are
    markup; anything else (including ``<`` and ``>``) is content. A ``<retrieve>`` the model writes itself is
    kept as a (non-inserted) retrieve span, which the grammar rejects: a model must not forge passages."""
    spans: list[Span] = []
    pos = 0
    open_kind: str | None = None
    open_at = 0
    for m in _TAG_RE.finditer(text):
        closing, kind = m.group(1) == "/", m.group(2)
        if open_kind is None:
            if closing:
                continue  # a stray closing tag stays inside the surrounding text span
            if text[pos : m.start()].strip():
                spans.append(Span("text", text[pos : m.start()]))
            open_kind, open_at = kind, m.end()
        elif closing and kind == open_kind:
            spans.append(Span(kind, text[open_at : m.start()]))
            open_kind, pos = None, m.end()
    if open_kind is not None:
        spans.append(Span(open_kind, text[open_at:], closed=False))
    elif text[pos:].strip():
        spans.append(Span("text", text[pos:]))
    return spans


def parse_pieces(pieces: Iterable[tuple[str, bool]]) -> list[Span]:
    """Spans of a trajectory given as ``(text, inserted)`` pieces in order. Consecutive sampled pieces are
    joined before parsing (a block may straddle a round boundary only if the model wrote it so); each
    inserted piece that holds a ``<retrieve>`` block becomes one opaque inserted span. An inserted
    ``<answer>`` opener (a forced answer) starts the answer block that the model's following text fills; it
    is a boundary: a block the model left open before it stays open (and fails :func:`is_well_formed`)."""
    spans: list[Span] = []
    buffer = ""
    for text, inserted in pieces:
        if inserted and text.strip() == ANSWER_OPEN:
            spans.extend(_parse_model_text(buffer))
            buffer = text
        elif inserted and RETRIEVE_OPEN in text:
            spans.extend(_parse_model_text(buffer))
            buffer = ""
            inner = text.split(RETRIEVE_OPEN, 1)[1].rsplit(RETRIEVE_CLOSE, 1)[0]
            spans.append(Span("retrieve", inner, inserted=True))
        else:
            buffer += text
    spans.extend(_parse_model_text(buffer))
    return spans


def parse_text(text: str) -> list[Span]:
    """Spans of a flat transcript. Inside ``<retrieve>`` everything up to ``</retrieve>`` is one span
    (passages were neutralised when inserted), treated as inserted."""
    pieces: list[tuple[str, bool]] = []
    pos = 0
    while True:
        start = text.find(RETRIEVE_OPEN, pos)
        if start < 0:
            pieces.append((text[pos:], False))
            break
        end = text.find(RETRIEVE_CLOSE, start)
        end = len(text) if end < 0 else end + len(RETRIEVE_CLOSE)
        pieces.append((text[pos:start], False))
        pieces.append((text[start:end], True))
        pos = end
    return parse_pieces(pieces)


def is_well_formed(spans: Sequence[Span]) -> bool:
    """True when ``spans`` follow the grammar in the module docstring: think blocks, each optionally
    followed by a query and a system-inserted retrieve block, then exactly one answer, last."""
    blocks = [s for s in spans if not (s.kind == "text" and not s.text.strip())]
    if not blocks or any(s.kind == "text" or not s.closed for s in blocks):
        return False
    if blocks[-1].kind != "answer" or not blocks[-1].text.strip():
        return False
    i, body, seen_think = 0, blocks[:-1], False
    while i < len(body):
        s = body[i]
        if s.kind == "retrieve":  # system-initiated context (RAG pre-retrieval, a CDIR case)
            if not s.inserted:
                return False
            i += 1
            continue
        if s.kind != "think" or not s.text.strip():
            return False
        seen_think = True
        i += 1
        if i < len(body) and body[i].kind == "query":
            if not body[i].text.strip() or i + 1 >= len(body):
                return False
            if body[i + 1].kind != "retrieve" or not body[i + 1].inserted:
                return False
            i += 2
    return seen_think


def answer_text(spans: Sequence[Span]) -> str | None:
    """Text of the last closed answer span, stripped; None when there is none."""
    for s in reversed(spans):
        if s.kind == "answer" and s.closed:
            return s.text.strip()
    return None


def queries(spans: Sequence[Span]) -> list[str]:
    """The model's closed query spans, stripped, in order."""
    return [s.text.strip() for s in spans if s.kind == "query" and s.closed and s.text.strip()]


# a letter that stands alone: "B", "(b)", "B.", "option B", "B)" ... and nothing after it
_LONE_LETTER_RE = re.compile(r"^\s*(?:option\s+)?\(?([A-Ja-j])\)?\s*[.:;,)\]]?\s*$", re.IGNORECASE)
# a letter marked as a label by a bracket or punctuation, then text: "B. text", "(B) text", "B: text"
_LABELLED_LETTER_RE = re.compile(
    r"^\s*(?:option\s+)?(?:\(([A-Ja-j])\)|([A-Ja-j])\s*[.,:;)\]])\s*(\S.*)$", re.IGNORECASE | re.DOTALL
)
# a letter followed by a space and text: "A defect ..." may be the article "A"; the letter counts only when
# the text after it is that option's text
_SPACED_LETTER_RE = re.compile(r"^\s*(?:option\s+)?([A-Ja-j])\s+(\S.*)$", re.IGNORECASE | re.DOTALL)


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: the form used to compare answers."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def extract_choice(answer: str | None, options: Sequence[str] | None) -> str | None:
    """The option letter an answer names, upper case, or None (unparsed).

    In this order: an answer whose normalized text equals exactly one option's normalized text names that
    option ("A defect in collagen synthesis" is the option with that text, not "A"); a letter standing alone
    (``B``, ``b``, ``(B)``, ``B.``, ``option B``); a letter labelled by a bracket or punctuation and followed
    by text (``B. text``, ``(B) text``, ``B: text``), unless that text is exactly another option's (a
    contradiction: None); a letter followed by a space and text (``B text``) only when the text is that
    option's. A letter beyond the number of options is None.
    """
    if not answer or not options:
        return None
    norms = [normalize_text(o) for o in options]

    def by_text(text: str) -> str | None:
        hits = [OPTION_LETTERS[i] for i, o in enumerate(norms) if o and o == normalize_text(text)]
        return hits[0] if len(hits) == 1 else None

    def in_range(letter: str) -> str | None:
        letter = letter.upper()
        return letter if OPTION_LETTERS.index(letter) < len(options) else None

    named = by_text(answer)
    if named is not None:
        return named
    m = _LONE_LETTER_RE.match(answer)
    if m:
        return in_range(m.group(1))
    m = _LABELLED_LETTER_RE.match(answer)
    if m:
        letter, rest = in_range(m.group(1) or m.group(2)), m.group(3)
        other = by_text(rest)
        return letter if other is None or other == letter else None
    m = _SPACED_LETTER_RE.match(answer)
    if m:
        letter = in_range(m.group(1))
        return letter if letter is not None and by_text(m.group(2)) == letter else None
    return None


def answer_matches(
    answer: str | None, gold_label: str | None, gold_text: str | None, options: Sequence[str] | None
) -> bool:
    """Accuracy: the extracted letter equals ``gold_label`` (case-insensitive) for an MCQ; for a
    free-text item, normalized answer text equals normalized ``gold_text``."""
    if answer is None:
        return False
    if options and gold_label:
        return extract_choice(answer, options) == gold_label.strip().upper()
    return bool(gold_text) and normalize_text(answer) == normalize_text(gold_text)
