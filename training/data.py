"""Stage data selection: pure functions over polars frames (no storage, no Dagster).

- :func:`split_use` decides, per dataset, which splits are trained on and which are evaluated on. A dataset
  with a training split trains on ``train`` and evaluates on the others. A dataset with **no** training split
  in a profile (the bundled MedQA is its test set, MedMCQA its dev set) is either trained on or evaluated on,
  never both: the caller states the choice and it is recorded in the returned decisions.
- :func:`stage1_items`: text MCQs (MedQA, MedMCQA) from the training splits of ``text_qa_items``.
- :func:`stage2_items`: closed multimodal questions with options (``vqa_items`` training splits; yes/no
  closed questions are already two-option MCQs there), images clustered with k-means (scikit-learn) over
  their embeddings; the items whose images are nearest each centre are kept.
- :func:`difficulty`: difficulty stratification from samples of the current policy: items it solved in every
  sample are dropped, the rest labelled ``easy`` (pass rate >= 0.5) or ``hard`` and keep their pass rates.
- :func:`leakage`: proves no training item is in an evaluation benchmark, by normalised question text and by
  image content id; returns the offending pairs (empty frame = proof). ECBench items are evaluation items.
  :func:`evaluation_leaks` is the rule both the stage items and the evaluation check apply to those pairs.
- :func:`evaluation_items`: every item some benchmark may evaluate, per the split-use decisions.
- :func:`policy_pass_rates`: batched samples of the current policy per item, the input of :func:`difficulty`
  (run by :mod:`training.stratify` in the trainer process).

Training-item columns (what :func:`training.launch` turns into a TRL dataset): ``item_id``, ``dataset``,
``split``, ``question``, ``context``, ``options``, ``answer_label``, ``answer``, ``explanation``,
``image_ref`` (content id or null), ``difficulty`` (``easy``/``hard``/null).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .protocol import answer_matches, build_messages, normalize_text

STAGE1_DATASETS = ("medqa", "medmcqa")
EVAL_SPLITS = ("validation", "test")
"""The splits evaluated of a dataset the split-use decisions do not know (one with a training split evaluates
its other splits; one without is evaluated whole or not at all, as decided)."""
ITEM_COLUMNS = {
    "item_id": pl.Utf8,
    "dataset": pl.Utf8,
    "split": pl.Utf8,
    "question": pl.Utf8,
    "context": pl.Utf8,
    "options": pl.List(pl.Utf8),
    "answer_label": pl.Utf8,
    "answer": pl.Utf8,
    "explanation": pl.Utf8,
    "image_ref": pl.Utf8,
    "difficulty": pl.Utf8,
}


@dataclass
class SplitUse:
    """Per dataset: the splits trained on and the splits evaluated on, and why (one decision per dataset)."""

    train: dict[str, list[str]] = field(default_factory=dict)
    evaluate: dict[str, list[str]] = field(default_factory=dict)
    decisions: list[dict[str, str]] = field(default_factory=list)

    def decisions_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            self.decisions, schema={"dataset": pl.Utf8, "use": pl.Utf8, "splits": pl.Utf8, "reason": pl.Utf8}
        )

    @classmethod
    def from_frame(cls, decisions: pl.DataFrame) -> SplitUse:
        """The decisions :meth:`decisions_frame` wrote, read back (an empty frame: nothing decided)."""
        use = cls()
        for d in decisions.iter_rows(named=True) if decisions.height else ():
            use.decisions.append({k: d[k] for k in ("dataset", "use", "splits", "reason")})
            if d["use"] == "train+eval":
                use.train[d["dataset"]] = ["train"]
                use.evaluate[d["dataset"]] = [x for x in d["splits"].split("|", 1)[1].split(",") if x]
            else:
                target = use.train if d["use"] == "train" else use.evaluate
                target[d["dataset"]] = [x for x in d["splits"].split(",") if x]
        return use

    def trained_only(self, dataset: str) -> bool:
        """Decided "train": all of it trains, it is never evaluated."""
        return dataset in self.train and dataset not in self.evaluate

    def evaluated_splits(self, dataset: str) -> list[str]:
        """The splits of ``dataset`` that may be evaluated: the decided ones, or :data:`EVAL_SPLITS` for a
        dataset the decisions do not know."""
        if dataset in self.train or dataset in self.evaluate:
            return list(self.evaluate.get(dataset, []))
        return list(EVAL_SPLITS)


def split_use(items: pl.DataFrame, no_train_split: Mapping[str, str]) -> SplitUse:
    """Decide split use for every dataset in ``items`` (columns ``dataset``, ``split``).

    ``no_train_split`` maps a dataset that has no ``train`` split to ``"train"`` (all its rows become training
    items and it is never evaluated) or ``"eval"`` (never trained on). A dataset without a train split and
    without a choice is an error that names it.
    """
    use = SplitUse()
    splits = items.group_by("dataset").agg(pl.col("split").unique().sort()).sort("dataset")
    missing = []
    for dataset, ds_splits in splits.iter_rows():
        if "train" in ds_splits:
            others = [s for s in ds_splits if s != "train"]
            use.train[dataset] = ["train"]
            use.evaluate[dataset] = others
            use.decisions.append(
                {
                    "dataset": dataset,
                    "use": "train+eval",
                    "splits": "train|" + ",".join(others),
                    "reason": "has a training split: train on it, evaluate on the others",
                }
            )
            continue
        choice = no_train_split.get(dataset)
        if choice not in ("train", "eval"):
            missing.append(dataset)
            continue
        target = use.train if choice == "train" else use.evaluate
        target[dataset] = list(ds_splits)
        use.decisions.append(
            {
                "dataset": dataset,
                "use": choice,
                "splits": ",".join(ds_splits),
                "reason": f"no training split in this profile: {choice} only, never both",
            }
        )
    if missing:
        raise ValueError(
            f"datasets without a 'train' split and no choice: {missing}; set no_train_split[dataset] to "
            "'train' or 'eval' (the choice is recorded, and the dataset is then never used the other way)"
        )
    return use


def _select_train(items: pl.DataFrame, use: SplitUse, datasets: Sequence[str] | None) -> pl.DataFrame:
    keep = [(d, s) for d, ss in use.train.items() for s in ss if datasets is None or d in datasets]
    if not keep:
        return items.clear()
    cond = pl.lit(False)
    for d, s in keep:
        cond = cond | ((pl.col("dataset") == d) & (pl.col("split") == s))
    return items.filter(cond)


def _as_items(frame: pl.DataFrame, image_ref: pl.Expr) -> pl.DataFrame:
    cols = {
        "item_id": pl.col("item_id"),
        "dataset": pl.col("dataset"),
        "split": pl.col("split"),
        "question": pl.col("question"),
        "context": pl.col("context") if "context" in frame.columns else pl.lit(None, pl.Utf8),
        "options": pl.col("options"),
        "answer_label": pl.col("answer_label"),
        "answer": pl.col("answer"),
        "explanation": pl.col("explanation") if "explanation" in frame.columns else pl.lit(None, pl.Utf8),
        "image_ref": image_ref,
        "difficulty": pl.lit(None, pl.Utf8),
    }
    return frame.select([e.cast(ITEM_COLUMNS[k]).alias(k) for k, e in cols.items()])


def stage1_items(
    text_qa: pl.DataFrame,
    use: SplitUse,
    *,
    datasets: Sequence[str] = STAGE1_DATASETS,
    limit: int | None = None,
    seed: int = 0,
) -> pl.DataFrame:
    """Text MCQs of ``datasets`` from their training splits (per ``use``), in a seeded shuffled order,
    at most ``limit``. Raises when nothing is selected (silent success with 0 rows is a failure)."""
    train = _select_train(text_qa, use, datasets).filter(
        pl.col("answer_label").is_not_null() & (pl.col("options").list.len() >= 2)
    )
    if train.height == 0:
        raise ValueError(
            f"stage1_items: no training MCQs in {list(datasets)} with the split use "
            f"{use.train}; choose 'train' for a dataset without a training split"
        )
    out = _as_items(train, pl.lit(None, pl.Utf8)).sample(fraction=1.0, shuffle=True, seed=seed)
    return out.head(limit) if limit else out


def kmeans_nearest(vectors: np.ndarray, n_clusters: int, per_cluster: int = 1, seed: int = 0) -> list[int]:
    """Row indices of the ``per_cluster`` vectors nearest each k-means centre (scikit-learn ``KMeans``,
    k-means++ init, seeded), sorted; a vector is chosen at most once."""
    from sklearn.cluster import KMeans

    n = len(vectors)
    if n == 0:
        return []
    k = min(n_clusters, n)
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(vectors)
    dist = km.transform(vectors)
    chosen: set[int] = set()
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        order = members[np.argsort(dist[members, c])]
        chosen.update(int(i) for i in order[:per_cluster])
    return sorted(chosen)


def stage2_items(
    vqa: pl.DataFrame,
    use: SplitUse,
    image_vectors: pl.DataFrame,
    *,
    n_clusters: int,
    per_cluster: int = 1,
    questions_per_image: int = 1,
    exclude_image_refs: Sequence[str] = (),
    seed: int = 0,
) -> pl.DataFrame:
    """Closed multimodal MCQs from training splits, selected by k-means over image embeddings.

    ``image_vectors``: columns ``image_ref``, ``vector`` (list of floats), one row per image.
    ``exclude_image_refs``: images that must never be trained on (every evaluation image).
    Per chosen image, up to ``questions_per_image`` of its questions (seeded order).
    """
    train = _select_train(vqa, use, None).filter(
        (pl.col("answer_type") == "closed")
        & pl.col("answer_label").is_not_null()
        & (pl.col("options").list.len() >= 2)
        & (pl.col("image_refs").list.len() >= 1)
    )
    train = train.with_columns(pl.col("image_refs").list.first().alias("image_ref"))
    train = train.filter(~pl.col("image_ref").is_in(list(exclude_image_refs)))
    images = (
        train.select("image_ref").unique().sort("image_ref").join(image_vectors, on="image_ref", how="left")
    )
    without = images.filter(pl.col("vector").is_null())
    if without.height:
        raise ValueError(
            f"stage2_items: {without.height} training images have no embedding, e.g. "
            f"{without['image_ref'][0]}; embed every training image first"
        )
    if images.height == 0:
        raise ValueError(
            "stage2_items: no closed multimodal training questions with options after exclusions"
        )
    vectors = np.asarray(images["vector"].to_list(), dtype=np.float32)
    picked = images[kmeans_nearest(vectors, n_clusters, per_cluster, seed)]["image_ref"].to_list()
    chosen = (
        train.filter(pl.col("image_ref").is_in(picked))
        .sample(fraction=1.0, shuffle=True, seed=seed)
        .with_columns(pl.int_range(pl.len()).over("image_ref").alias("_n"))
        .filter(pl.col("_n") < questions_per_image)
        .sort("item_id")
    )
    return _as_items(chosen, pl.col("image_ref"))


PASS_RATE_COLUMNS = {
    "item_id": pl.Utf8,
    "policy_samples": pl.Int64,
    "policy_correct": pl.Int64,
    "policy_answered": pl.Int64,
    "pass_rate": pl.Float64,
}
"""Columns of :func:`policy_pass_rates` (the per-item record of difficulty stratification): samples drawn,
correct ones, ones that ended with a parsed answer, and the pass rate (correct / samples)."""


def difficulty(items: pl.DataFrame, rates: pl.DataFrame, easy_at: float = 0.5) -> pl.DataFrame:
    """Drop items the policy solved in every sample; label the rest ``easy`` (pass rate >= ``easy_at``) or
    ``hard``. ``rates``: :func:`policy_pass_rates`' frame; every item must have samples. The kept items carry
    their pass-rate columns (the record of why each was kept)."""
    sampled = rates.filter(pl.col("policy_samples") > 0)["item_id"].to_list()
    missing = sorted(set(items["item_id"].to_list()) - set(sampled))
    if missing:
        raise ValueError(f"difficulty: no policy samples for {len(missing)} items, e.g. {missing[:3]}")
    out = (
        items.drop("difficulty", *[c for c in PASS_RATE_COLUMNS if c != "item_id" and c in items.columns])
        .join(rates.select(list(PASS_RATE_COLUMNS)), on="item_id", how="left")
        .filter(pl.col("pass_rate") < 1.0)
    )
    return out.with_columns(
        pl.when(pl.col("pass_rate") >= easy_at)
        .then(pl.lit("easy"))
        .otherwise(pl.lit("hard"))
        .alias("difficulty")
    )


def leakage(train: pl.DataFrame, evaluation: pl.DataFrame) -> pl.DataFrame:
    """Pairs (training item, evaluation item) sharing a normalised question text or an image content id.

    ``train``: ``item_id``, ``question`` and ``image_ref`` (or ``image_refs``); ``evaluation``: ``item_id``,
    ``dataset``, ``question`` and ``image_refs`` (or ``image_ref``). Returns columns ``train_item_id``,
    ``eval_item_id``, ``eval_dataset``, ``reason`` (``question_text`` or ``image``); empty means no leak.
    """

    def refs(frame: pl.DataFrame) -> pl.Expr:
        if "image_refs" in frame.columns:
            return pl.col("image_refs")
        if "image_ref" in frame.columns:
            return pl.concat_list(pl.col("image_ref")).list.drop_nulls()
        return pl.lit([], pl.List(pl.Utf8))

    def norm(frame: pl.DataFrame) -> pl.Series:
        return pl.Series([normalize_text(q or "") for q in frame["question"].to_list()], dtype=pl.Utf8)

    dataset = pl.col("dataset") if "dataset" in evaluation.columns else pl.lit(None, pl.Utf8)
    t = train.select(pl.col("item_id").alias("train_item_id"), refs(train).alias("refs")).with_columns(
        norm(train).alias("q")
    )
    e = evaluation.select(
        pl.col("item_id").alias("eval_item_id"), dataset.alias("eval_dataset"), refs(evaluation).alias("refs")
    ).with_columns(norm(evaluation).alias("q"))
    by_text = (
        t.filter(pl.col("q") != "")
        .join(e, on="q")
        .select("train_item_id", "eval_item_id", "eval_dataset")
        .with_columns(pl.lit("question_text").alias("reason"))
    )
    te = t.explode("refs").drop_nulls("refs")
    ee = e.explode("refs").drop_nulls("refs")
    by_image = (
        te.join(ee, on="refs")
        .select("train_item_id", "eval_item_id", "eval_dataset")
        .with_columns(pl.lit("image").alias("reason"))
    )
    return pl.concat([by_text, by_image]).unique().sort(["train_item_id", "eval_item_id", "reason"])


def evaluation_leaks(train: pl.DataFrame, evaluation: pl.DataFrame) -> pl.DataFrame:
    """The :func:`leakage` pairs that are leaks: a training item is an evaluation item when it shows the same
    image (content id), or, for questions without an image, asks the same normalized question. Image
    questions with a generic text ("Is this an MRI?") about different images are different items: for them
    the image decides.

    ``train``: ``item_id``, ``question``, ``image_ref``; ``evaluation``: ``item_id``, ``question`` and
    ``image_refs`` (absent: no images).
    """
    if "image_refs" not in evaluation.columns:
        evaluation = evaluation.with_columns(pl.lit([], pl.List(pl.Utf8)).alias("image_refs"))
    with_image_train = set(train.filter(pl.col("image_ref").is_not_null())["item_id"].to_list())
    with_image_eval = set(evaluation.filter(pl.col("image_refs").list.len() > 0)["item_id"].to_list())
    return leakage(train, evaluation).filter(
        (pl.col("reason") == "image")
        | ~(
            pl.col("train_item_id").is_in(list(with_image_train))
            | pl.col("eval_item_id").is_in(list(with_image_eval))
        )
    )


def evaluation_items(
    text_qa: pl.DataFrame, vqa: pl.DataFrame, ecbench: pl.DataFrame, use: SplitUse
) -> pl.DataFrame:
    """Every item that some benchmark may evaluate: the splits :meth:`SplitUse.evaluated_splits` gives for
    each dataset (validation/test for a dataset with a training split; everything for a dataset evaluated
    only; nothing for a dataset trained on only; :data:`EVAL_SPLITS` of a dataset ``use`` does not know),
    and every ECBench item (never trained on). Columns ``item_id``, ``dataset``, ``question``,
    ``image_refs``."""

    def pick(frame: pl.DataFrame) -> pl.DataFrame:
        if frame.is_empty():
            return frame
        cond = pl.lit(False)
        for dataset in frame["dataset"].unique().sort().to_list():
            splits = use.evaluated_splits(dataset)
            cond = cond | ((pl.col("dataset") == dataset) & pl.col("split").is_in(splits))
        return frame.filter(cond)

    frames = []
    for frame, refs in ((pick(text_qa), pl.lit([], pl.List(pl.Utf8))), (pick(vqa), pl.col("image_refs"))):
        if frame.height:
            frames.append(frame.select("item_id", "dataset", "question", refs.alias("image_refs")))
    if ecbench.height:
        frames.append(ecbench.select("item_id", pl.lit("ecbench").alias("dataset"), "question", "image_refs"))
    empty = {"item_id": pl.Utf8, "dataset": pl.Utf8, "question": pl.Utf8, "image_refs": pl.List(pl.Utf8)}
    return pl.concat(frames) if frames else pl.DataFrame(schema=empty)


def mcq_prompt_rows(items: pl.DataFrame, load_image=None) -> list[dict]:
    """Stage items as rollout rows in the TRL layout (``prompt`` with the image inside the user message,
    ``item_id``, ``answer_label``, ``answer``, ``options``); ``load_image(content id) -> PIL image`` for the
    rows with an ``image_ref`` (a row with one and no ``load_image`` is refused)."""
    rows = []
    for r in items.iter_rows(named=True):
        ref = r.get("image_ref")
        if ref and load_image is None:
            raise ValueError(f"item {r['item_id']} shows image {ref}: pass load_image (the image store)")
        messages = build_messages(r["question"], r["options"], has_image=bool(ref), context=r.get("context"))
        if ref:
            messages[1]["content"][0] = {"type": "image", "image": load_image(ref)}
        rows.append({**r, "prompt": messages})
    return rows


def policy_pass_rates(
    rollout, model, processor, rows: Sequence[dict], samples: int = 4, batch_size: int = 64, progress=None
) -> pl.DataFrame:
    """``samples`` rollouts of the current policy per row, batched: ``batch_size`` trajectories per rollout
    call (each row's samples side by side, as GRPO's generations of one prompt are), with ``rollout``'s own
    budgets (the stage's, so the pass rate is the one training would see). ``rows``:
    :func:`mcq_prompt_rows`. A trajectory is correct when its parsed answer matches; one that ends without
    an answer (budget spent, or a query in the last round) is wrong. ``progress(done, total)`` is called
    after each batch. Returns :data:`PASS_RATE_COLUMNS`, one row per item."""
    if samples < 1 or batch_size < 1:
        raise ValueError(f"samples and batch_size must be >= 1, got {samples} and {batch_size}")
    jobs = [r for r in rows for _ in range(samples)]
    correct: dict[str, list[int]] = {r["item_id"]: [0, 0, 0] for r in rows}  # samples, correct, answered
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start : start + batch_size]
        result = rollout.run(model, processor, [r["prompt"] for r in batch])
        for r, t in zip(batch, result.trajectories, strict=True):
            answer = t.answer()
            tally = correct[r["item_id"]]
            tally[0] += 1
            tally[1] += bool(answer_matches(answer, r["answer_label"], r["answer"], r["options"]))
            tally[2] += answer is not None
        if progress is not None:
            progress(min(start + batch_size, len(jobs)), len(jobs))
    return pl.DataFrame(
        {
            "item_id": list(correct),
            "policy_samples": [v[0] for v in correct.values()],
            "policy_correct": [v[1] for v in correct.values()],
            "policy_answered": [v[2] for v in correct.values()],
            "pass_rate": [v[1] / v[0] if v[0] else float("nan") for v in correct.values()],
        },
        schema=PASS_RATE_COLUMNS,
    )
