"""Stage data selection: split use, stage-1/2 items, k-means selection, difficulty, leakage proof."""

import numpy as np
import polars as pl
import pytest

from training.data import kmeans_nearest, leakage, split_use, stage1_items, stage2_items


def text_qa():
    rows = []
    for ds, split, n in [
        ("medqa", "test", 3),
        ("medmcqa", "validation", 3),
        ("pubmedqa", "train", 2),
        ("pubmedqa", "test", 1),
    ]:
        for i in range(n):
            rows.append(
                {
                    "item_id": f"{ds}:{split}:{i}",
                    "dataset": ds,
                    "split": split,
                    "question": f"{ds} q{i}?",
                    "context": None,
                    "options": ["a", "b", "c", "d"],
                    "answer_label": "B",
                    "answer": "b",
                    "explanation": "because",
                    "subject": None,
                    "source_ref": "x",
                    "license": "MIT",
                }
            )
    return pl.DataFrame(rows)


def test_split_use_records_the_choice_for_datasets_without_train_split():
    with pytest.raises(ValueError, match="medmcqa.*medqa|medqa"):
        split_use(text_qa(), {})
    use = split_use(text_qa(), {"medqa": "eval", "medmcqa": "train"})
    assert use.train == {"medmcqa": ["validation"], "pubmedqa": ["train"]}
    assert use.evaluate == {"medqa": ["test"], "pubmedqa": ["test"]}
    decisions = use.decisions_frame()
    assert decisions.filter(pl.col("dataset") == "medqa")["use"].item() == "eval"
    assert decisions.filter(pl.col("dataset") == "medmcqa")["use"].item() == "train"
    # never both: no dataset/split is in train and evaluate at once
    both = {(d, s) for d, ss in use.train.items() for s in ss} & {
        (d, s) for d, ss in use.evaluate.items() for s in ss
    }
    assert not both
    items = stage1_items(text_qa(), use)
    assert set(items["dataset"]) == {"medmcqa"} and items.height == 3
    assert items["image_ref"].null_count() == 3
    with pytest.raises(ValueError, match="no training MCQs"):
        stage1_items(text_qa(), split_use(text_qa(), {"medqa": "eval", "medmcqa": "eval"}))


def vqa_items(n_images=12):
    rows = []
    for i in range(n_images):
        for q in range(2):
            rows.append(
                {
                    "item_id": f"v{i}-{q}",
                    "dataset": "slake",
                    "split": "train" if i < 10 else "test",
                    "image_refs": [f"img{i}.jpg"],
                    "question": f"Is there a lesion {i}-{q}?",
                    "options": ["Yes", "No"],
                    "answer": "Yes",
                    "answer_label": "A",
                    "answer_type": "closed" if q == 0 else "open",
                    "modality": "CT",
                    "organ": "Lung",
                    "question_type": None,
                    "language": "en",
                    "source_ref": "x",
                    "license": "CC-BY-4.0",
                }
            )
    return pl.DataFrame(rows)


def test_kmeans_picks_points_nearest_the_centres():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 10], [-10, 10]], dtype=np.float32)
    pts = np.concatenate([c + rng.normal(0, 1, (20, 2)) for c in centres]).astype(np.float32)
    pts[7] = np.delete(pts[:20], 7, axis=0).mean(axis=0)  # exactly at its cluster's mean, hence the centroid
    picked = kmeans_nearest(pts, 3, per_cluster=1, seed=0)
    assert len(picked) == 3 and 7 in picked
    assert {i // 20 for i in picked} == {0, 1, 2}  # one per cluster


def test_stage2_items_kmeans_training_split_closed_only_and_exclusions():
    vqa = vqa_items()
    use = split_use(vqa, {})
    rng = np.random.default_rng(1)
    vectors = pl.DataFrame(
        {
            "image_ref": [f"img{i}.jpg" for i in range(12)],
            "vector": [rng.normal(size=8).tolist() for _ in range(12)],
        }
    )
    items = stage2_items(vqa, use, vectors, n_clusters=4, exclude_image_refs=["img0.jpg"])
    assert items.height == 4 and set(items["split"]) == {"train"}
    assert all(i.endswith("-0") for i in items["item_id"])  # closed questions only
    assert "img0.jpg" not in items["image_ref"].to_list()
    with pytest.raises(ValueError, match="no embedding"):
        stage2_items(vqa, use, vectors.head(3), n_clusters=2)


def test_leakage_by_normalized_text_and_image_content_id():
    train = pl.DataFrame(
        {
            "item_id": ["t1", "t2", "t3"],
            "question": ["Is the LUNG normal?", "other", "third"],
            "image_ref": ["a.jpg", "b.jpg", None],
        }
    )
    evaluation = pl.DataFrame(
        {
            "item_id": ["e1", "e2", "e3"],
            "dataset": ["slake", "ecbench", "vqa_rad"],
            "question": ["is the lung normal", "unrelated", "nothing"],
            "image_refs": [["z.jpg"], ["b.jpg"], []],
        }
    )
    bad = leakage(train, evaluation)
    assert bad.select("train_item_id", "eval_item_id", "reason").rows() == [
        ("t1", "e1", "question_text"),
        ("t2", "e2", "image"),
    ]
    clean = leakage(train.filter(pl.col("item_id") == "t3"), evaluation)
    assert clean.height == 0
