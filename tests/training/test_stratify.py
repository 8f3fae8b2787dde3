"""Stage-2 difficulty stratification in the trainer process: :func:`training.data.policy_pass_rates` batches
the policy's samples with the rollout's own budgets, and ``python -m training.stratify`` (what the
``stage2_items`` asset launches through Pipes, like a stage) samples the stage-1 policy on one process and on
two (each rank its shard, gathered by rank 0), with the stage config's budgets and every rank pinned to the
same KB version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from assets.common.profiles import SAMPLE_DATA_DIR
from tests.training.conftest import mcq_rows
from tests.training.helpers import ScriptedGenerate
from training import smoke
from training.data import PASS_RATE_COLUMNS, difficulty, mcq_prompt_rows, policy_pass_rates

REPO = Path(__file__).resolve().parents[2]


def rates_frame(rows: dict[str, tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "item_id": i,
                "policy_samples": n,
                "policy_correct": c,
                "policy_answered": n,
                "pass_rate": c / n if n else float("nan"),
            }
            for i, (n, c) in rows.items()
        ],
        schema=PASS_RATE_COLUMNS,
    )


def test_difficulty_drops_always_solved_keeps_pass_rates_and_refuses_unsampled_items():
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "question": ["q"] * 3, "difficulty": [None] * 3})
    out = difficulty(items, rates_frame({"a": (4, 4), "b": (4, 2), "c": (4, 1)}))
    assert dict(zip(out["item_id"], out["difficulty"], strict=True)) == {"b": "easy", "c": "hard"}
    assert out["pass_rate"].to_list() == [0.5, 0.25] and out["policy_samples"].to_list() == [4, 4]
    with pytest.raises(ValueError, match="no policy samples for 1 items"):
        difficulty(items, rates_frame({"a": (4, 4), "b": (4, 2)}))
    with pytest.raises(ValueError, match="no policy samples"):
        difficulty(items, rates_frame({"a": (4, 4), "b": (4, 2), "c": (0, 0)}))


def test_pass_rates_are_batched_with_the_rollouts_budget(policy, retriever):
    from training.rollout import Rollout

    model, processor = policy
    # trajectory t (in batch order) answers A (right) when t is even, B otherwise; the third item's
    # trajectories write a query in the last round and end without an answer
    script = ScriptedGenerate(
        processor.tokenizer,
        lambda c, r, ctx: (
            "<think> t </think><query> lung </query>"
            if "unanswerable" in ctx
            else f"<think> t </think><answer> {'AB'[r % 2]} </answer>"
        ),
    )
    model.generate = script
    rows = mcq_rows(2)
    rows.append({**mcq_rows(1)[0], "item_id": "item2"})
    rows[2]["prompt"][1]["content"][0]["text"] += " unanswerable"
    rollout = Rollout(retriever, max_rounds=1, max_new_tokens_per_round=16, ban_queries=False)
    seen = []
    out = policy_pass_rates(
        rollout, model, processor, rows, samples=2, batch_size=4, progress=lambda *p: seen.append(p)
    )
    assert out.schema == pl.Schema(PASS_RATE_COLUMNS)
    assert out.rows() == [
        ("item0", 2, 1, 2, 0.5),
        ("item1", 2, 1, 2, 0.5),
        ("item2", 2, 0, 0, 0.0),
    ]
    assert [c["rows"] for c in script.calls] == [4, 2]  # 6 trajectories in batches of 4
    assert {c["max_new_tokens"] for c in script.calls} == {16}  # the rollout's own round budget
    assert seen == [(4, 6), (6, 6)]
    with pytest.raises(ValueError, match="must be >= 1"):
        policy_pass_rates(rollout, model, processor, rows, samples=0)


def test_mcq_prompt_rows_put_the_image_in_the_message_and_refuse_a_missing_store():
    items = pl.DataFrame(
        {
            "item_id": ["v1", "t1"],
            "question": ["Is this the lung?", "Which organ?"],
            "options": [["Yes", "No"], ["Lung", "Liver"]],
            "answer_label": ["A", "A"],
            "answer": ["Yes", "Lung"],
            "image_ref": ["abc", None],
        }
    )
    rows = mcq_prompt_rows(items, lambda ref: f"<image {ref}>")
    assert rows[0]["prompt"][1]["content"][0] == {"type": "image", "image": "<image abc>"}
    assert all(c["type"] == "text" for c in rows[1]["prompt"][1]["content"])
    with pytest.raises(ValueError, match="item v1 shows image abc: pass load_image"):
        mcq_prompt_rows(items)


# ---- the entry point, as the asset launches it ------------------------------------------------------------
def stage2_candidates(folder: Path, n: int = 5) -> tuple[Path, Path]:
    """``n`` stage-2 candidate items over two real SLAKE images in a content-addressed image folder."""
    from storage.layout import image_key

    images = folder / "images"
    refs = []
    for path in sorted((SAMPLE_DATA_DIR / "slake" / "imgs").glob("xmlab*/source.jpg"))[:2]:
        ref = path.parent.name + "-source"
        target = images.joinpath(*image_key(ref))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        refs.append(ref)
    items = pl.DataFrame(
        [
            {
                "item_id": f"s{i}",
                "dataset": "slake",
                "split": "train",
                "question": "Which organ is shown?",
                "context": None,
                "options": ["Lung", "Liver"],
                "answer_label": "A",
                "answer": "Lung",
                "explanation": None,
                "image_ref": refs[i % 2],
                "difficulty": None,
            }
            for i in range(n)
        ]
    )
    path = folder / "candidates.parquet"
    items.write_parquet(path)
    return path, images


def run_stratify(tmp_path, tiny_model_dir, kb, processes: int):
    items, images = stage2_candidates(tmp_path)
    output = tmp_path / "out" / "pass_rates.parquet"
    head = [sys.executable]
    if processes > 1:
        config = REPO / "training" / "accelerate" / "cpu2.yaml"
        head += ["-m", "accelerate.commands.launch", "--config_file", str(config)]
    args = [
        "-m",
        "training.stratify",
        "--items",
        str(items),
        "--images-uri",
        str(images),
        "--kb-uri",
        kb[0],
        "--kb-tag",
        kb[1],
        "--base-model",
        str(tiny_model_dir),
        "--config",
        json.dumps({**smoke.STAGE2_POLICY, "seed": 0}),
        "--samples",
        "3",
        "--batch-size",
        "4",
        "--output",
        str(output),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRL_EXPERIMENTAL_SILENCE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([*head, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return pl.read_parquet(output), json.loads(Path(f"{output}.json").read_text())


def check_output(rates: pl.DataFrame, summary: dict, world_size: int) -> None:
    assert rates.schema == pl.Schema(PASS_RATE_COLUMNS)
    assert rates["item_id"].to_list() == [f"s{i}" for i in range(5)]  # every candidate once
    assert rates["policy_samples"].to_list() == [3] * 5
    assert summary["world_size"] == world_size and summary["device"] == "cpu"
    assert summary["kb_version_per_rank"] == [summary["kb_version"]] * world_size
    # the stage-2 config's budgets, not a budget of the stratification's own
    budgets = summary["rollout_settings"]
    assert budgets["max_rounds"] == smoke.STAGE2_POLICY["max_rounds"]
    assert budgets["max_new_tokens_per_round"] == smoke.STAGE2_POLICY["max_new_tokens_per_round"]
    assert budgets["max_completion_tokens"] == smoke.STAGE2_POLICY["max_completion_length"]


@pytest.mark.timeout(600)
def test_stratify_entry_point_one_process(tmp_path, tiny_model_dir, kb):
    rates, summary = run_stratify(tmp_path, tiny_model_dir, kb, 1)
    check_output(rates, summary, 1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_stratify_entry_point_two_processes_shard_and_gather(tmp_path, tiny_model_dir, kb):
    rates, summary = run_stratify(tmp_path, tiny_model_dir, kb, 2)
    check_output(rates, summary, 2)
