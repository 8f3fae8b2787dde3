"""Rebuild ``assets/sample_data`` (the smoke profile's data) from a full copy of the released datasets.

Usage: python tools/make_sample_data.py ../shared/data

Every sample file keeps its dataset's released layout and field names, only fewer records; images are
copied byte for byte; licence and provenance files travel with each dataset. The choice of records is
deterministic (sorted names, fixed strides), so rerunning the script reproduces the same bytes.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "assets" / "sample_data"


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _dump(obj, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def vqa_rad(src: Path, n_train_images: int = 18, n_test_images: int = 6) -> None:
    rows = json.loads((src / "VQA_RAD Dataset Public.json").read_text())
    test_imgs = sorted({r["image_name"] for r in rows if str(r["phrase_type"]).startswith("test")})
    train_imgs = sorted({r["image_name"] for r in rows} - set(test_imgs))
    chosen = set(train_imgs[:: max(1, len(train_imgs) // n_train_images)][:n_train_images])
    chosen |= set(test_imgs[:: max(1, len(test_imgs) // n_test_images)][:n_test_images])
    dst = OUT / "vqa_rad"
    _dump([r for r in rows if r["image_name"] in chosen], dst / "VQA_RAD Dataset Public.json")
    for name in sorted(chosen):
        _copy(src / "VQA_RAD Image Folder" / name, dst / "VQA_RAD Image Folder" / name)
    for name in ("trainset.json", "testset.json"):
        m = json.loads((src / "miccai19_format" / name).read_text())
        _dump([r for r in m if r["image_name"] in chosen], dst / "miccai19_format" / name)
    for name in ("PROVENANCE.md", "Readme_official.txt"):
        _copy(src / name, dst / name)


def slake(src: Path, per_split: dict[str, int] | None = None) -> None:
    per_split = per_split or {"train": 20, "validate": 5, "test": 5}
    dst = OUT / "slake"
    for split, n in per_split.items():
        rows = json.loads((src / f"{split}.json").read_text())
        imgs = sorted({r["img_name"] for r in rows})
        chosen = set(imgs[:: max(1, len(imgs) // n)][:n])
        _dump([r for r in rows if r["img_name"] in chosen], dst / f"{split}.json")
        for img in sorted(chosen):
            folder = img.split("/")[0]
            for f in ("source.jpg", "detection.json"):
                _copy(src / "imgs" / folder / f, dst / "imgs" / folder / f)
    for f in sorted((src / "KG_mvqa-kg").iterdir()):
        _copy(f, dst / "KG_mvqa-kg" / f.name)
    _copy(src / "PROVENANCE.md", dst / "PROVENANCE.md")


def head_lines(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", encoding="utf-8") as f:
        lines = [line for _, line in zip(range(n), f, strict=False)]
    if dst.suffix == ".gz":
        with gzip.GzipFile(dst, "wb", mtime=0) as g:
            g.write("".join(lines).encode())
    else:
        dst.write_text("".join(lines), encoding="utf-8")


def pubmedqa(src: Path, n: int = 200) -> None:
    data = json.loads((src / "ori_pqal.json").read_text())
    test = json.loads((src / "test_ground_truth.json").read_text())
    keys = sorted(data)[:n]
    dst = OUT / "pubmedqa"
    _dump({k: data[k] for k in keys}, dst / "ori_pqal.json")
    _dump({k: v for k, v in test.items() if k in set(keys)}, dst / "test_ground_truth.json")
    for name in ("LICENSE.pubmedqa.txt", "PROVENANCE.md", "README.pubmedqa.md"):
        _copy(src / name, dst / name)


def main(data_dir: str) -> None:
    src = Path(data_dir)
    if OUT.exists():
        shutil.rmtree(OUT)
    vqa_rad(src / "vqa_rad")
    slake(src / "slake")
    pubmedqa(src / "pubmedqa")
    head_lines(
        src / "medqa_us" / "phrases_no_exclude_test.jsonl",
        OUT / "medqa_us" / "phrases_no_exclude_test.jsonl",
        200,
    )
    head_lines(src / "medmcqa" / "dev.json", OUT / "medmcqa" / "dev.json", 300)
    head_lines(src / "medquad" / "medquad_qa.jsonl.gz", OUT / "medquad" / "medquad_qa.jsonl.gz", 1500)
    for ds, names in {
        "medqa_us": ("LICENSE.medqa.txt", "PROVENANCE.md"),
        "medmcqa": ("LICENSE.medmcqa.md", "PROVENANCE.md"),
        "medquad": ("LICENSE.medquad.txt", "PROVENANCE.md", "readme.medquad.txt"),
    }.items():
        for name in names:
            _copy(src / ds / name, OUT / ds / name)
    _copy(src / "README.md", OUT / "DATA_README.md")
    (OUT / "README.md").write_text(
        "# Sample data for the smoke profile\n\n"
        "Small subsets of real public datasets in their released layouts, "
        "made by `tools/make_sample_data.py` from the full releases. Each folder keeps its licence and "
        "PROVENANCE.md; DATA_README.md lists the licences and attribution lines.\n\n"
        "VQA-RAD (Lau et al., Sci Data 2018, CC0 1.0); SLAKE (Liu et al., ISBI 2021, CC BY 4.0; KG MIT); "
        "PubMedQA (Jin et al., EMNLP 2019, MIT); MedQA (Jin et al., 2021, MIT); "
        "MedMCQA (Pal et al., CHIL 2022, "
        "MIT/Apache-2.0); MedQuAD (Ben Abacha & Demner-Fushman, BMC Bioinformatics 2019, CC BY 4.0).\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
