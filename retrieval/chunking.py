"""Chunks that fit the embedder: packed by sentences, measured with the embedder's own tokenizer.

A passage is embedded as ``passage_input(title, text)`` (``"<title>. <text>"``) and the encoder reads at most
``max_seq_length`` tokens, special tokens included; anything longer is silently truncated by the model.
:class:`TokenChunker` therefore packs sentences greedily into chunks whose *embedded input* (title and the
special tokens counted) never exceeds that limit, and keeps the 100-200-word target only where it fits:
a chunk ends at ``max_words`` words or at the token budget, whichever comes first. A sentence longer than the
budget is cut at word boundaries; a single word longer than the budget (a pasted URL) is cut by tokens.
Every chunk is re-measured at the end, so the limit holds whatever the tokenizer does at boundaries.

No Dagster import; the tokenizer is any Hugging Face tokenizer (``embedder.model.tokenizer``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

MIN_WORDS = 100
MAX_WORDS = 200
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


class ChunkError(ValueError):
    """A record cannot be chunked to fit the embedder (e.g. its title alone fills the token limit)."""


def passage_input(title: str | None, text: str) -> str:
    """What a passage is embedded (and full-text indexed) as: ``"<title>. <text>"``, or the text alone."""
    return f"{title}. {text}" if title else text


def _words(group: list[tuple[list[str], int]]) -> int:
    return sum(len(words) for words, _ in group)


def _tokens(group: list[tuple[list[str], int]]) -> int:
    return sum(tokens for _, tokens in group)


@dataclass
class TokenChunker:
    """Sentence packing under a token limit measured by ``tokenizer``.

    ``max_seq_length`` is the embedder's limit including special tokens (256 for the offline MiniLM);
    ``min_words``/``max_words`` is the word target (a trailing chunk shorter than ``min_words`` is merged into
    the previous one when the merge still fits).
    """

    tokenizer: Any
    max_seq_length: int
    min_words: int = MIN_WORDS
    max_words: int = MAX_WORDS
    model_id: str = ""

    def __post_init__(self) -> None:
        # a private copy of the Rust tokenizer with padding and truncation off (a tokenizer.json may ship with
        # both set, e.g. MiniLM pads and truncates to 128): counts are exact, and twice as fast as the wrapper
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        self._fast = None
        if backend is not None:
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_str(backend.to_str())
            self._fast.no_padding()
            self._fast.no_truncation()
        self.special_tokens = int(self.tokenizer.num_special_tokens_to_add(pair=False))
        self.max_tokens = self.max_seq_length - self.special_tokens
        if self.max_tokens < 8:
            raise ValueError(f"max_seq_length {self.max_seq_length} leaves no room for text")

    @classmethod
    def for_embedder(
        cls, embedder: Any, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS
    ) -> TokenChunker:
        """The chunker matching a :class:`~retrieval.embedders.TextEmbedder` (its tokenizer and limit)."""
        return cls(embedder.tokenizer, embedder.max_seq_length, min_words, max_words, embedder.model_id)

    def identity(self) -> dict[str, Any]:
        """What determines the chunks: the tokenizer, the limit and the word target (for metadata)."""
        spec = self._fast.to_str() if self._fast is not None else repr(self.tokenizer)
        digest = hashlib.sha256(spec.encode()).hexdigest()
        return {
            "model_id": self.model_id,
            "tokenizer_sha256": digest[:16],
            "max_seq_length": self.max_seq_length,
            "min_words": self.min_words,
            "max_words": self.max_words,
        }

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text without special tokens."""
        if not texts:
            return []
        if self._fast is not None:
            return [len(e.ids) for e in self._fast.encode_batch_fast(texts, add_special_tokens=False)]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def input_tokens(self, title: str | None, text: str) -> int:
        """Tokens the encoder reads for this passage, special tokens included."""
        return self.count([passage_input(title, text)])[0] + self.special_tokens

    def chunk(self, text: str, title: str | None = None) -> list[str]:
        """``text`` as chunks whose ``passage_input(title, chunk)`` fits ``max_seq_length`` tokens.

        Whitespace is normalized (chunks are joined by single spaces); the words of the chunks, in order, are
        the words of ``text``. Raises :class:`ChunkError` when the title leaves fewer than 16 tokens.
        """
        title_tokens = self.count([f"{title}. "])[0] if title else 0
        budget = self.max_tokens - title_tokens
        if budget < 16:
            raise ChunkError(f"title of {title_tokens} tokens leaves {budget} of {self.max_tokens} for text")
        words = (text or "").split()
        if not words:
            return []
        if len(words) <= self.max_words:  # the common case: the whole text fits as one chunk
            whole = " ".join(words)
            if self.input_tokens(title, whole) <= self.max_seq_length:
                return [whole]
        sentences = [s.split() for s in _SENTENCE_END.split(text) if s.strip()]
        pieces: list[tuple[list[str], int]] = []
        for sentence, tokens in zip(sentences, self.count([" ".join(s) for s in sentences]), strict=True):
            pieces.extend(self._split_long(sentence, tokens, budget))
        groups: list[list[tuple[list[str], int]]] = [[]]
        for words, tokens in pieces:
            group = groups[-1]
            if group and (_words(group) + len(words) > self.max_words or _tokens(group) + tokens > budget):
                groups.append([])
            groups[-1].append((words, tokens))
        last = groups[-1]
        if len(groups) > 1 and _words(last) < self.min_words:
            prev = groups[-2]
            if _tokens(prev) + _tokens(last) <= budget:  # merge a short tail when it fits
                groups[-2:] = [prev + last]
            else:  # else move whole sentences from the previous chunk while both stay near the target
                while (
                    len(prev) > 1
                    and _words(last) < self.min_words
                    and _words(prev) - len(prev[-1][0]) >= self.min_words
                    and _tokens(last) + prev[-1][1] <= budget
                ):
                    last.insert(0, prev.pop())
        chunks = [([w for words, _ in group for w in words], _tokens(group)) for group in groups]
        texts = [" ".join(words) for words, _ in chunks]
        sizes = self.count([passage_input(title, t) for t in texts])
        out: list[str] = []
        for (words, _), text, size in zip(chunks, texts, sizes, strict=True):
            out.extend(
                [text] if size + self.special_tokens <= self.max_seq_length else self._verified(words, title)
            )
        return out

    def _split_long(self, words: list[str], tokens: int, budget: int) -> list[tuple[list[str], int]]:
        """A sentence over ``budget`` tokens (or ``max_words`` words) as word windows that fit."""
        if tokens <= budget and len(words) <= self.max_words:
            return [(words, tokens)]
        out: list[tuple[list[str], int]] = []
        cur: list[str] = []
        cur_tokens = 0
        for word, n in zip(words, self.count(words), strict=True):
            if n > budget:  # one "word" longer than the whole budget: cut it by tokens
                if cur:
                    out.append((cur, cur_tokens))
                    cur, cur_tokens = [], 0
                out.extend(self._split_word(word, budget))
                continue
            if cur and (cur_tokens + n > budget or len(cur) >= self.max_words):
                out.append((cur, cur_tokens))
                cur, cur_tokens = [], 0
            cur.append(word)
            cur_tokens += n
        if cur:
            out.append((cur, cur_tokens))
        return out

    def _split_word(self, word: str, budget: int) -> list[tuple[list[str], int]]:
        enc = self.tokenizer(word, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        out = []
        for start in range(0, len(offsets), budget // 2):
            window = offsets[start : start + budget // 2]
            out.append(([word[window[0][0] : window[-1][1]]], len(window)))
        return out

    def _verified(self, words: list[str], title: str | None) -> list[str]:
        """The chunk itself when its embedded input fits, else its halves (recursively); rarely reached:
        only when the tokenizer counts a joined chunk differently from its sentences."""
        text = " ".join(words)
        if len(words) <= 1 or self.input_tokens(title, text) <= self.max_seq_length:
            return [text]
        mid = len(words) // 2
        return self._verified(words[:mid], title) + self._verified(words[mid:], title)
