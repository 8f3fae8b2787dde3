"""Writers of small fixture folders in the published layouts of the VQA datasets we have no copy of."""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path

import polars as pl
from PIL import Image


def image_bytes(seed: int, fmt: str = "JPEG", size: tuple[int, int] = (32, 24)) -> bytes:
    """A small, valid, distinct image."""
    im = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    im.putpixel((seed % size[0], 0), (255, 255, 255))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def write_path_vqa_parquet(root: Path) -> Path:
    """Hugging Face layout: data/{split}-00000-of-00001.parquet with image {bytes, path}, question, answer."""
    (root / "data").mkdir(parents=True)
    shared = image_bytes(1)
    for split, n in (("train", 3), ("validation", 1), ("test", 2)):
        rows = {
            "image": [{"bytes": shared if i < 2 else image_bytes(10 + i), "path": None} for i in range(n)],
            "question": [f"is there {split} {i} necrosis?" for i in range(n)],
            "answer": ["yes" if i % 2 == 0 else "necrosis" for i in range(n)],
        }
        pl.DataFrame(rows).write_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def write_path_vqa_pickle(root: Path) -> Path:
    """Original release: split/qas/{split}/{split}_qa.pkl + split/images/{split}/<name>.jpg."""
    for split in ("train", "test"):
        (root / "split" / "qas" / split).mkdir(parents=True)
        (root / "split" / "images" / split).mkdir(parents=True)
        recs = [
            {"image": f"{split}_{i:04d}", "question": f"what is shown {i}?", "answer": "no" if i else "gland"}
            for i in range(2)
        ]
        (root / "split" / "qas" / split / f"{split}_qa.pkl").write_bytes(pickle.dumps(recs))
        for i in range(2):
            (root / "split" / "images" / split / f"{split}_{i:04d}.jpg").write_bytes(image_bytes(20 + i))
    return root


def write_pmc_vqa(root: Path, bad_label: bool = False) -> Path:
    """train.csv / test.csv with Figure_path, Question, Answer, Choice A..D, Answer_label; images/."""
    (root / "images").mkdir(parents=True)
    for split in ("train", "test"):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(
                [
                    "index",
                    "Figure_path",
                    "Question",
                    "Answer",
                    "Choice A",
                    "Choice B",
                    "Choice C",
                    "Choice D",
                    "Answer_label",
                ]
            )
            for i in range(3):
                name = f"PMC{split}{i}_F1.jpg"
                (root / "images" / name).write_bytes(image_bytes(30 + i + (split == "test") * 5))
                label = "E" if (bad_label and i == 2) else "ABC"[i]
                w.writerow(
                    [
                        i,
                        name,
                        f"What modality is figure {i}?",
                        ["CT", "MRI", "PET"][i],
                        "A:CT",
                        " B:MRI",
                        "C:PET",
                        "D:Ultrasound",
                        label,
                    ]
                )
    return root


def write_omnimedvqa(root: Path) -> Path:
    """QA_information/Open-access/<set>.json with Images/<set>/..."""
    (root / "QA_information" / "Open-access").mkdir(parents=True)
    (root / "Images" / "Chest CT Scan").mkdir(parents=True)
    recs = []
    for i in range(3):
        path = f"Images/Chest CT Scan/img{i}.png"
        (root / path).write_bytes(image_bytes(40 + i, "PNG"))
        recs.append(
            {
                "dataset": "Chest CT Scan",
                "question_id": f"Chest CT Scan_{i}",
                "question_type": "Disease Diagnosis",
                "question": "What does this image show?",
                "gt_answer": ["Adenocarcinoma", "Normal", "No"][i],
                "image_path": path,
                "option_A": "Adenocarcinoma",
                "option_B": "Normal",
                "option_C": "Squamous cell carcinoma",
                "modality_type": "CT",
            }
        )
    (root / "QA_information" / "Open-access" / "Chest CT Scan.json").write_text(json.dumps(recs))
    return root


def write_mmmu(root: Path) -> Path:
    """<Subject>/validation-00000-of-00001.parquet with image_1..image_7 structs and options as a list
    literal."""
    (root / "Clinical_Medicine").mkdir(parents=True)
    n = 3
    rows = {
        "id": [f"validation_Clinical_Medicine_{i}" for i in range(n)],
        "question": [f"<image 1> Which finding is shown in case {i}?" for i in range(n)],
        "options": ["['Pneumonia', 'Effusion', 'Normal', 'Mass']", "['A1', 'B1']", "[]"],
        "explanation": ["", "", ""],
        "image_1": [{"bytes": image_bytes(50 + i), "path": f"{i}.png"} for i in range(n)],
        "image_2": [None, {"bytes": image_bytes(60), "path": "x.png"}, None],
        "img_type": ["['CT']"] * n,
        "answer": ["B", "A", "pneumothorax"],
        "question_type": ["multiple-choice", "multiple-choice", "open"],
        "subfield": ["Radiology"] * n,
    }
    for k in range(3, 8):
        rows[f"image_{k}"] = [None] * n
    df = pl.DataFrame(
        rows,
        schema_overrides={
            f"image_{k}": pl.Struct({"bytes": pl.Binary, "path": pl.Utf8}) for k in range(1, 8)
        },
    )
    df.write_parquet(root / "Clinical_Medicine" / "validation-00000-of-00001.parquet")
    return root


def write_medxpertqa(root: Path) -> Path:
    """MM/test.jsonl and MM/dev.jsonl with images listed by file name under images/."""
    (root / "MM").mkdir(parents=True)
    (root / "images").mkdir()
    for split in ("dev", "test"):
        lines = []
        for i in range(2):
            name = f"MM-{split}-{i}-a.jpeg"
            (root / "images" / name).write_bytes(image_bytes(70 + i + (split == "test") * 3))
            lines.append(
                json.dumps(
                    {
                        "id": f"MM-{split}-{i}",
                        "question": "A 54-year-old man presents... Answer Choices: (A) x (B) y",
                        "options": {
                            "A": "Aortic stenosis",
                            "B": "Mitral regurgitation",
                            "C": "HCM",
                            "D": "Normal",
                            "E": "Pericarditis",
                        },
                        "label": "C",
                        "images": [name],
                        "medical_task": "Diagnosis",
                        "body_system": "Cardiovascular",
                        "question_type": "Reasoning",
                    }
                )
            )
        (root / "MM" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root
