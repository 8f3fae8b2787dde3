"""ECBench: 4-option echocardiography MCQs generated from ``echo_studies`` rows and their measurements.

Question types (each needs its measurement; a clip without it gets no item of that type):

* ``ef_category``  LV ejection fraction: normal / mildly / moderately / severely abnormal.
* ``lv_dilation``  LV size from LVIDd: normal / mildly / moderately / severely dilated.
* ``wall_thickness`` max(IVSd, LVPWd): normal / mildly / moderately / severely increased.
* ``view``         A4C / A2C / PLAX / PSAX.

Thresholds: Lang RM, Badano LP, Mor-Avi V, et al. *Recommendations for Cardiac Chamber Quantification by
Echocardiography in Adults: An Update from the American Society of Echocardiography and the European
Association of Cardiovascular Imaging.* J Am Soc Echocardiogr 2015;28:1-39.e14 (LVEF ranges and
abnormality partitions, section 2 / Table 4; LV linear dimensions and wall thickness, Tables 2 and 9,
which keep the 2005 partition values). Cut-offs are sex-specific; when the sex is not recorded, an item is
made only if both sexes' cut-offs give the same category (no guessing).

Deterministic for a seed: the answer position of each item is its rank (by a seeded hash) modulo 4 within
its question type, so positions are balanced to within one per type; splits are made by patient (a seeded
hash of the pseudonymous key), so no patient is in two splits. Plain library (no Dagster).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import polars as pl

LETTERS = "ABCD"
GUIDELINE = (
    "Lang RM et al. Recommendations for Cardiac Chamber Quantification by Echocardiography in Adults: "
    "An Update from the ASE and EACVI. J Am Soc Echocardiogr 2015;28:1-39"
)
LICENSE = "derived from the source echo studies; the source's licence and data use agreement apply"
VALIDATION_SHARE = 0.25

# (upper bound exclusive, category) per sex; the last bound is infinity. Lang 2015.
EF_BANDS = {  # LVEF %, lower is worse: (lower bound inclusive, category), checked top-down
    "M": [(52, "normal"), (41, "mildly abnormal"), (30, "moderately abnormal"), (-1, "severely abnormal")],
    "F": [(54, "normal"), (41, "mildly abnormal"), (30, "moderately abnormal"), (-1, "severely abnormal")],
}
LVIDD_BANDS = {  # mm, higher is worse: (upper bound inclusive, category)
    "M": [(58.4, "normal"), (63, "mildly dilated"), (68, "moderately dilated"), (1e9, "severely dilated")],
    "F": [(52.2, "normal"), (56, "mildly dilated"), (61, "moderately dilated"), (1e9, "severely dilated")],
}
WALL_BANDS = {  # mm
    "M": [
        (10, "normal"),
        (13, "mildly increased"),
        (16, "moderately increased"),
        (1e9, "severely increased"),
    ],
    "F": [(9, "normal"), (12, "mildly increased"), (15, "moderately increased"), (1e9, "severely increased")],
}
VIEW_NAMES = {
    "A4C": "apical four-chamber",
    "A2C": "apical two-chamber",
    "PLAX": "parasternal long-axis",
    "PSAX": "parasternal short-axis",
}

ITEM_SCHEMA = {
    "item_id": pl.Utf8,
    "benchmark": pl.Utf8,
    "question_type": pl.Utf8,
    "clip_id": pl.Utf8,
    "patient_key": pl.Utf8,
    "source": pl.Utf8,
    "split": pl.Utf8,
    "question": pl.Utf8,
    "options": pl.List(pl.Utf8),
    "answer_label": pl.Utf8,
    "answer": pl.Utf8,
    "explanation": pl.Utf8,
    "image_refs": pl.List(pl.Utf8),
    "clip_ref": pl.Utf8,
    "license": pl.Utf8,
}


def _h(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


def _ef(v: float, sex: str) -> str:
    return next(c for lo, c in EF_BANDS[sex] if v >= lo)


def _upper(bands: dict, v: float, sex: str) -> str:
    return next(c for hi, c in bands[sex] if v <= hi)


def categorize(kind: str, value: float, sex: str | None) -> str | None:
    """Guideline category of ``value`` for ``kind`` (ef/lvidd/wall); None when sex-ambiguous."""
    fn = {
        "ef": lambda v, s: _ef(v, s),
        "lvidd": lambda v, s: _upper(LVIDD_BANDS, v, s),
        "wall": lambda v, s: _upper(WALL_BANDS, v, s),
    }[kind]
    if sex in ("M", "F"):
        return fn(value, sex)
    male, female = fn(value, "M"), fn(value, "F")
    return male if male == female else None


def _sex(row: dict) -> str | None:
    s = (row.get("sex") or "").strip().upper()
    return s if s in ("M", "F") else None


def _cutoffs_text(kind: str, sex: str | None) -> str:
    sexes = [sex] if sex else ["M", "F"]
    parts = []
    for s in sexes:
        if kind == "ef":
            b = EF_BANDS[s]
            parts.append(
                f"{'men' if s == 'M' else 'women'}: normal >= {b[0][0]}%, mildly abnormal 41-{b[0][0] - 1}%, "
                "moderately 30-40%, severely < 30%"
            )
        else:
            b = (LVIDD_BANDS if kind == "lvidd" else WALL_BANDS)[s]
            parts.append(
                f"{'men' if s == 'M' else 'women'}: normal <= {b[0][0]} mm, mild <= {b[1][0]}, "
                f"moderate <= {b[2][0]}, severe above"
            )
    return "; ".join(parts)


def raw_items(studies: pl.DataFrame) -> list[dict]:
    """Every possible item (answer text, distractors in canonical order) before positions and splits."""
    items = []
    for r in studies.to_dicts():
        sex = _sex(r)
        sex_note = "" if sex else " (sex not recorded: both sexes' cut-offs agree)"
        base = {
            "clip_id": r["clip_id"],
            "patient_key": r["patient_key"],
            "source": r["source"],
            "image_refs": list(r["keyframe_refs"] or []),
            "clip_ref": r["clip_ref"],
        }
        frames = "end-diastolic and end-systolic frames" if r.get("keyframe_policy") == "ed_es" else "frames"
        if r.get("ef_percent") is not None:
            cat = categorize("ef", r["ef_percent"], sex)
            if cat:
                items.append(
                    {
                        **base,
                        "question_type": "ef_category",
                        "question": f"These {frames} are from one echocardiographic clip. How is the left "
                        "ventricular ejection fraction best categorized?",
                        "categories": [c for _, c in EF_BANDS["M"]],
                        "answer": cat,
                        "explanation": f"LVEF {r['ef_percent']:.1f}% (EDV {r.get('edv_ml')} mL, ESV "
                        f"{r.get('esv_ml')} mL) is {cat}{sex_note}. Cut-offs, {GUIDELINE}: "
                        + _cutoffs_text("ef", sex)
                        + ".",
                    }
                )
        if r.get("lvidd_mm") is not None:
            cat = categorize("lvidd", r["lvidd_mm"], sex)
            if cat:
                items.append(
                    {
                        **base,
                        "question_type": "lv_dilation",
                        "question": f"These {frames} are from one echocardiographic clip. How is the left "
                        "ventricular size at end-diastole best described?",
                        "categories": [c for _, c in LVIDD_BANDS["M"]],
                        "answer": cat,
                        "explanation": f"LV internal diameter at end-diastole {r['lvidd_mm']:.1f} mm is "
                        f"{cat}{sex_note}. Cut-offs, {GUIDELINE}: " + _cutoffs_text("lvidd", sex) + ".",
                    }
                )
        walls = [v for v in (r.get("ivsd_mm"), r.get("lvpwd_mm")) if v is not None]
        if walls:
            cat = categorize("wall", max(walls), sex)
            if cat:
                items.append(
                    {
                        **base,
                        "question_type": "wall_thickness",
                        "question": f"These {frames} are from one echocardiographic clip. How is the left "
                        "ventricular wall thickness best described?",
                        "categories": [c for _, c in WALL_BANDS["M"]],
                        "answer": cat,
                        "explanation": f"IVSd {r.get('ivsd_mm')} mm, "
                        f"LVPWd {r.get('lvpwd_mm')} mm; the thicker "
                        f"wall ({max(walls):.1f} mm) is {cat}{sex_note}. Cut-offs, {GUIDELINE}: "
                        + _cutoffs_text("wall", sex)
                        + ".",
                    }
                )
        if r.get("view") in VIEW_NAMES:
            items.append(
                {
                    **base,
                    "question_type": "view",
                    "question": "Which standard transthoracic echocardiographic view is shown?",
                    "categories": list(VIEW_NAMES.values()),
                    "answer": VIEW_NAMES[r["view"]],
                    "explanation": f"The clip is labelled {r['view']} ({VIEW_NAMES[r['view']]}) in the "
                    "source's label manifest.",
                }
            )
    return items


def build_items(studies: pl.DataFrame, seed: int = 0) -> pl.DataFrame:
    """ECBench items from ``echo_studies`` rows: balanced answer positions, patient-level splits."""
    items = raw_items(studies)
    patients = sorted({i["patient_key"] for i in items}, key=lambda p: _h(seed, "split", p))
    n_val = int(len(patients) * VALIDATION_SHARE) if len(patients) >= 4 else 0
    split_of = {p: ("validation" if k < n_val else "test") for k, p in enumerate(patients)}
    out = []
    for qtype in sorted({i["question_type"] for i in items}):
        group = sorted(
            (i for i in items if i["question_type"] == qtype),
            key=lambda i: _h(seed, "pos", qtype, i["clip_id"]),
        )
        for rank, it in enumerate(group):
            pos = rank % 4
            distractors = [c for c in it["categories"] if c != it["answer"]]
            options = distractors[:pos] + [it["answer"]] + distractors[pos:]
            out.append(
                {
                    "item_id": "ecb_" + _h("item", qtype, it["clip_id"])[:16],
                    "benchmark": "ecbench",
                    "question_type": qtype,
                    "clip_id": it["clip_id"],
                    "patient_key": it["patient_key"],
                    "source": it["source"],
                    "split": split_of[it["patient_key"]],
                    "question": it["question"],
                    "options": options,
                    "answer_label": LETTERS[pos],
                    "answer": it["answer"],
                    "explanation": it["explanation"],
                    "image_refs": it["image_refs"],
                    "clip_ref": it["clip_ref"],
                    "license": LICENSE,
                }
            )
    return pl.DataFrame(out, schema=ITEM_SCHEMA).sort("item_id")


def version_of(items: pl.DataFrame) -> str:
    """Content hash of the items (sorted by id): the benchmark version."""
    return hashlib.sha256(items.sort("item_id").write_ndjson().encode()).hexdigest()[:16]


def _counts(items: pl.DataFrame, *cols: str) -> dict[str, int]:
    if items.is_empty():
        return {}
    g = items.group_by(list(cols)).len().sort(list(cols))
    return {"/".join(str(x) for x in row[:-1]): int(row[-1]) for row in g.iter_rows()}


def manifest(items: pl.DataFrame, seed: int, studies_version: str) -> dict[str, Any]:
    """The benchmark's manifest: version, seed, guideline, inputs and counts per type, split and letter."""
    return {
        "benchmark": "ecbench",
        "version": version_of(items),
        "seed": seed,
        "guideline": GUIDELINE,
        "echo_studies_version": studies_version,
        "items": items.height,
        "patients": items["patient_key"].n_unique() if items.height else 0,
        "per_question_type": _counts(items, "question_type"),
        "per_split": _counts(items, "split"),
        "per_answer_label": _counts(items, "answer_label"),
        "per_type_and_label": _counts(items, "question_type", "answer_label"),
    }


def manifest_json(m: dict[str, Any]) -> bytes:
    """Manifest as stable JSON bytes."""
    return json.dumps(m, indent=2, sort_keys=True).encode()


# ---- checks ---------------------------------------------------------------------------------------
def check_balanced(items: pl.DataFrame) -> tuple[bool, dict[str, dict[str, int]]]:
    """Within each question type, answer-letter counts differ by at most one."""
    per: dict[str, dict[str, int]] = {}
    for qtype in items["question_type"].unique().to_list():
        sub = items.filter(pl.col("question_type") == qtype)
        per[qtype] = {L: int((sub["answer_label"] == L).sum()) for L in LETTERS}
    ok = all(max(c.values()) - min(c.values()) <= 1 for c in per.values())
    return ok, per


def patients_in_several_splits(items: pl.DataFrame) -> list[str]:
    """Patient keys that appear in more than one split (must be empty)."""
    g = items.group_by("patient_key").agg(pl.col("split").n_unique().alias("n"))
    return g.filter(pl.col("n") > 1)["patient_key"].to_list()


def unresolvable_refs(items: pl.DataFrame, existing: set[str]) -> list[str]:
    """Item ids with no image ref or with a ref missing from storage (must be empty)."""
    return [
        i
        for i, refs in zip(items["item_id"].to_list(), items["image_refs"].to_list(), strict=True)
        if not refs or any(r not in existing for r in refs)
    ]


def duplicate_items(items: pl.DataFrame) -> list[str]:
    """Item ids repeated, or items that repeat another's (question, options, images) (must be empty)."""
    dup_ids = items.filter(pl.col("item_id").is_duplicated())["item_id"].unique().to_list()
    key = items.select(
        pl.concat_str(
            [pl.col("question"), pl.col("options").list.join("|"), pl.col("image_refs").list.join("|")],
            separator="#",
        ).alias("k"),
        "item_id",
    )
    dup_content = key.filter(pl.col("k").is_duplicated())["item_id"].to_list()
    return sorted(set(dup_ids) | set(dup_content))
