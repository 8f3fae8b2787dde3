"""Medical entities for the query-semantic reward: an offline UMLS-keyed lexicon and a pluggable NER.

The paper extracts UMLS concepts with a medical NER. Offline we build a lexicon from two local sources:

- MedQuAD (``medquad_qa.jsonl.gz``): each record's ``focus`` string names a concept with its UMLS CUIs
  (``cuis``); the focus becomes a term whose concept id is its CUI (several CUIs: sorted and joined by ``|``).
- The SLAKE knowledge graph (``KG_mvqa-kg/en_disease.csv``, ``en_organ.csv``, ``en_organ_rel.csv``,
  ``#``-separated triples): disease and organ names, and organ names used as values (``location``,
  ``belong to``). A name that is also a MedQuAD focus takes that CUI; others get ``SLAKE:<name>``.
- PubMedQA (``ori_pqal.json``): the MeSH headings each abstract is indexed with (``MESHES``), a curated
  vocabulary of diseases, drugs, procedures and anatomy; an inverted heading (``Tomography, X-Ray Computed``)
  is also added in natural order (``X-Ray Computed Tomography``). MeSH check tags (``Humans``, ``Female``,
  ``Aged`` ...: who was studied, not what) are left out. A heading that is already a term keeps that term's
  concept; others get ``MESH:<heading>``. With the full PQA-L file (3,408 headings) the lexicon grows from
  4,723 to 8,370 terms and finds an entity in 39.6 % of MedQA test gold answers instead of 15.7 %
  (``benchmarks/lexicon_coverage.py``, BENCHMARKS.md).

Matching is multi-pattern (Aho-Corasick, ``pyahocorasick``) over normalised text (lower case, punctuation to
spaces) at word boundaries, leftmost-longest and non-overlapping: "lung cancer" is one entity, not three.

Production plugs any :class:`EntityExtractor` (e.g. scispaCy + UMLS linker, or a hosted NER) into the reward;
the lexicon is the offline default.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

_NON_WORD = re.compile(r"[^\w]+")
MIN_TERM_CHARS = 3


class EntityExtractor(Protocol):
    """Anything that maps texts to sets of concept ids (UMLS CUIs where known)."""

    def entities(self, texts: Sequence[str]) -> list[set[str]]: ...


def normalize_term(text: str) -> str:
    """Lower case, every run of non-word characters to one space, stripped."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


@dataclass
class Lexicon:
    """Normalised term -> concept id, with the source of each term."""

    terms: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def add(self, term: str, concept: str, source: str) -> None:
        norm = normalize_term(term)
        if len(norm) < MIN_TERM_CHARS or norm.isdigit() or norm in self.terms:
            return
        self.terms[norm] = concept
        self.sources[norm] = source

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"terms": self.terms, "sources": self.sources}, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        data = json.loads(Path(path).read_text())
        return cls(data["terms"], data["sources"])

    def concepts(self) -> set[str]:
        return set(self.terms.values())


def _kg_rows(path: Path) -> Iterable[list[str]]:
    with path.open(newline="") as fh:
        reader = csv.reader(fh, delimiter="#")
        header = next(reader, None)
        if header is None:
            raise ValueError(
                f"{path}: empty knowledge-graph file; expected a '#'-separated header and triples"
            )
        for n, row in enumerate(reader, start=2):
            if len(row) < 3:
                raise ValueError(f"{path} line {n}: expected 'entity#attribute#value', got {row!r}")
            yield row


MESH_CHECK_TAGS = frozenset(
    {
        "Humans",
        "Animals",
        "Male",
        "Female",
        "Adult",
        "Aged",
        "Aged, 80 and over",
        "Middle Aged",
        "Adolescent",
        "Young Adult",
        "Child",
        "Child, Preschool",
        "Infant",
        "Infant, Newborn",
        "Pregnancy",
    }
)
"""MeSH check tags: attributes of the study population, not medical entities."""


def mesh_terms(heading: str) -> list[str]:
    """A MeSH heading and, when it is inverted (``Tomography, X-Ray Computed``), its natural order."""
    parts = heading.split(", ")
    return [heading, f"{parts[1]} {parts[0]}"] if len(parts) == 2 else [heading]


def build_lexicon(
    medquad_path: str | Path | None,
    slake_kg_dir: str | Path | None,
    pubmedqa_path: str | Path | None = None,
) -> Lexicon:
    """The offline lexicon from MedQuAD ``focus``/``cuis``, the SLAKE KG and PubMedQA's MeSH headings (see
    the module docstring). At least one source must exist; a missing path named explicitly is an error."""
    lex = Lexicon()
    if medquad_path is None and slake_kg_dir is None and pubmedqa_path is None:
        raise ValueError(
            "build_lexicon: give the MedQuAD file, the SLAKE KG folder or PubMedQA's ori_pqal.json"
        )
    if medquad_path is not None:
        path = Path(medquad_path)
        if not path.exists():
            raise FileNotFoundError(f"MedQuAD file not found: {path} (expected medquad_qa.jsonl.gz)")
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as fh:
            for n, line in enumerate(fh, start=1):
                r = json.loads(line)
                cuis = sorted({c for c in (r.get("cuis") or []) if c})
                if r.get("focus") and cuis:
                    lex.add(r["focus"], "|".join(cuis), f"medquad:{n}")
    if slake_kg_dir is not None:
        kg = Path(slake_kg_dir)
        files = [kg / n for n in ("en_disease.csv", "en_organ.csv", "en_organ_rel.csv")]
        if not any(f.exists() for f in files):
            raise FileNotFoundError(f"no SLAKE KG csv under {kg} (expected en_disease.csv, en_organ.csv ...)")
        for f in files:
            if not f.exists():
                continue
            for row in _kg_rows(f):
                names = [row[0]]
                if row[1] in ("location", "belong to"):
                    names += [v for v in re.split(r",|;| and ", row[2]) if v.strip()]
                for name in names:
                    norm = normalize_term(name)
                    lex.add(name, lex.terms.get(norm, f"SLAKE:{norm}"), f"slake:{f.name}")
    if pubmedqa_path is not None:
        path = Path(pubmedqa_path)
        if not path.exists():
            raise FileNotFoundError(f"PubMedQA file not found: {path} (expected ori_pqal.json)")
        try:
            records = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); expected PubMedQA's ori_pqal.json") from e
        if not isinstance(records, dict):
            raise ValueError(f"{path}: expected a JSON object of PubMedQA records keyed by PMID")
        headings = sorted(
            {m for r in records.values() for m in (r.get("MESHES") or []) if isinstance(m, str)}
        )
        for heading in headings:
            if heading in MESH_CHECK_TAGS:
                continue
            for term in mesh_terms(heading):
                lex.add(
                    term, lex.terms.get(normalize_term(heading), f"MESH:{heading}"), f"pubmedqa:{path.name}"
                )
    if not lex.terms:
        raise ValueError("build_lexicon: no terms found in the given sources")
    return lex


class LexiconNER:
    """Leftmost-longest, word-bounded lexicon matching with an Aho-Corasick automaton."""

    def __init__(self, lexicon: Lexicon):
        import ahocorasick

        self.lexicon = lexicon
        self.automaton = ahocorasick.Automaton()
        for term, concept in lexicon.terms.items():
            self.automaton.add_word(f" {term} ", (len(term), concept))
        self.automaton.make_automaton()

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping ``(start, end, concept)`` matches in the normalised text."""
        norm = " " + normalize_term(text) + " "
        if len(self.lexicon.terms) == 0 or len(norm) < 3:
            return []
        found = []
        for last, (length, concept) in self.automaton.iter(norm):
            start = (
                last - length - 1
            )  # ``last`` is the padded key's trailing space; offsets in the normalised text
            found.append((start, start + length, concept))
        found.sort(key=lambda s: (s[0], -(s[1] - s[0])))
        chosen, last_end = [], -1
        for start, end, concept in found:
            if start >= last_end:
                chosen.append((start, end, concept))
                last_end = end
        return chosen

    def entities(self, texts: Sequence[str]) -> list[set[str]]:
        """The set of concept ids found in each text."""
        return [{c for _, _, c in self.spans(t or "")} for t in texts]
