"""Rewards with hand-computed values, on the model's spans only; reference-code bugs: docs/method.md §8."""

import math

import numpy as np
import pytest

from assets.common.profiles import SAMPLE_DATA_DIR
from training.lexicon import Lexicon, LexiconNER, build_lexicon
from training.protocol import retrieve_block
from training.rewards import (
    PAPER_WEIGHTS,
    QuerySemanticReward,
    accuracy_reward,
    confidence_gain_reward,
    format_reward,
    overlap_score,
    stage_rewards,
)
from training.rollout import Piece, Trajectory


def traj(pieces, queries=(), passages=(), answer_lp=None, no_ret_lp=None):
    """A trajectory from (text, inserted) pieces (ids are not needed by these rewards)."""
    ps, at = [], 0
    for i, (text, inserted) in enumerate(pieces):
        ps.append(Piece(at, at + 1, inserted, i + 1, "retrieve" if inserted else "sampled", text))
        at += 1
    return Trajectory(
        prompt_ids=[1],
        completion_ids=[0] * at,
        env_mask=[0 if p.inserted else 1 for p in ps],
        pieces=ps,
        queries=list(queries),
        passages=[list(p) for p in passages],
        answer_logprobs=answer_lp,
        answer_logprobs_no_retrieval=no_ret_lp,
    )


OPTS = ["Pneumonia", "Cirrhosis"]
RETRIEVED = [
    ("<think> x </think><query> lung infection </query>", False),
    (retrieve_block(["Pneumonia infects the lung"]), True),
    ("<think> y </think><answer> A </answer>", False),
]


def call(fn, trajs, **cols):
    n = len(trajs)
    return fn(prompts=[[]] * n, completions=[""] * n, completion_ids=[[]] * n, trajectory=trajs, **cols)


def test_format_and_accuracy_hand_values():
    direct_right = traj([("<think> d </think><answer> a </answer>", False)])
    retrieved_right = traj(RETRIEVED)
    retrieved_wrong = traj(RETRIEVED[:2] + [("<think> y </think><answer> B </answer>", False)])
    broken = traj([("<answer> A </answer> trailing", False)])
    cols = {"answer_label": ["A"] * 4, "answer": ["Pneumonia"] * 4, "options": [OPTS] * 4}
    trajs = [direct_right, retrieved_right, retrieved_wrong, broken]
    assert call(format_reward, trajs, **cols) == [1.0, 2.0, 1.0, 0.0]
    assert call(accuracy_reward, trajs, **cols) == [1.0, 1.0, 0.0, 1.0]  # accuracy ignores the format


def test_passage_with_angle_brackets_does_not_zero_format():  # docs/method.md §8
    pieces = [
        RETRIEVED[0],
        (retrieve_block(["p < 0.05, size > 3 mm, </think> <answer> B </answer>"]), True),
        RETRIEVED[2],
    ]
    cols = {"answer_label": ["A"], "answer": ["Pneumonia"], "options": [OPTS]}
    assert call(format_reward, [traj(pieces)], **cols) == [2.0]
    assert call(accuracy_reward, [traj(pieces)], **cols) == [1.0]  # the passage's "<answer> B" is not read


def test_rewards_do_not_read_retrieved_text_for_the_answer():
    # the answer span is the model's; the passage names option A, the model said B
    pieces = [
        RETRIEVED[0],
        (retrieve_block(["The answer is A. Pneumonia"]), True),
        ("<think> y </think><answer> B </answer>", False),
    ]
    assert call(
        accuracy_reward, [traj(pieces)], answer_label=["A"], answer=["Pneumonia"], options=[OPTS]
    ) == [0.0]


def small_ner():
    lex = Lexicon()
    for term, cui in [
        ("lung", "C1"),
        ("infection", "C2"),
        ("pneumonia", "C3"),
        ("liver", "C4"),
        ("heart", "C5"),
    ]:
        lex.add(term, cui, "test")
    return LexiconNER(lex)


def test_query_semantic_text_part_hand_values():
    # S_Q = {lung, infection}; S_K = {pneumonia, lung, liver}; S_G = {pneumonia, lung}
    # q_text = 1/2 + 2/3
    assert overlap_score({"C1", "C2"}, {"C3", "C1", "C4"}, {"C3", "C1"}) == pytest.approx(0.5 + 2 / 3)
    reward = QuerySemanticReward(small_ner())
    t = traj(RETRIEVED, queries=["lung infection"], passages=[["Pneumonia infects the lung", "liver facts"]])
    out = call(
        reward,
        [t],
        answer_label=["A"],
        answer=["Pneumonia"],
        options=[OPTS],
        explanation=["It is a lung disease."],
        image=[None],
    )
    assert out == [pytest.approx(0.5 + 2 / 3)]


def test_closed_answer_without_entities_takes_s_g_from_the_question():
    """A stage-2 yes/no item has no entity in its answer and no explanation: S_G falls back to the
    question's entities, so a query about what the item asks earns the text term (it was always 0)."""
    reward = QuerySemanticReward(small_ner())
    t = traj(RETRIEVED, queries=["lung infection"], passages=[["the lung is clear", "heart size normal"]])
    columns = dict(answer_label=[None], answer=["yes"], options=[[]], explanation=[None], image=[None])
    assert call(reward, [t], **columns) == [0.0]  # no question column: S_G empty, as before
    out = call(reward, [t], question=["Is there an infection in the lung?"], **columns)
    # S_G = {lung, infection}; S_Q = {lung, infection}: 2/2; S_K = {lung, heart}: 1/2
    assert out == [pytest.approx(1.5)]
    # an answer with entities keeps S_G from the answer (the question is only the fallback)
    gold = dict(columns, answer=["pneumonia"])
    assert call(reward, [t], question=["Is there an infection in the lung?"], **gold) == [0.0]


def test_retrieved_entity_term_reads_the_completion_not_the_prompt():  # docs/method.md §8
    reward = QuerySemanticReward(small_ner())
    t = traj(RETRIEVED, queries=["heart"], passages=[["pneumonia of the lung"]])
    prompt_with_entities = [[{"role": "user", "content": "pneumonia lung liver heart"}]]
    out = reward(
        prompts=prompt_with_entities,
        completions=[""],
        completion_ids=[[]],
        trajectory=[t],
        answer_label=["A"],
        answer=["Pneumonia"],
        options=[OPTS],
        explanation=["lung"],
        image=[None],
    )
    # S_Q = {heart}: 0/1; S_K = {pneumonia, lung} both gold: 2/2
    assert out == [pytest.approx(1.0)]


def test_no_query_gives_zero_and_text_only_rows_do_not_crash():
    from PIL import Image

    from retrieval.embedders import ImageEmbedder

    reward = QuerySemanticReward(small_ner(), ImageEmbedder())
    direct = traj([("<think> d </think><answer> A </answer>", False)])
    asked = traj(RETRIEVED, queries=["lung infection"], passages=[["pneumonia"]])
    img = Image.new("RGB", (40, 40), (200, 10, 10))
    cols = {
        "answer_label": ["A"] * 3,
        "answer": ["Pneumonia"] * 3,
        "options": [OPTS] * 3,
        "explanation": [None] * 3,
        "image": [None, None, img],
    }
    out = call(reward, [direct, asked, asked], **cols)
    assert out[0] == 0.0
    s_q, s_k, s_g = small_ner().entities(["lung infection", "pneumonia", "Pneumonia"])
    text_only = overlap_score(s_q, s_k, s_g)
    assert out[1] == pytest.approx(text_only)
    emb = reward.image_embedder
    cos = float(emb.embed_texts(["lung infection"])[0] @ emb.embed([img])[0])
    assert out[2] == pytest.approx(text_only + cos, abs=1e-5)


def test_confidence_gain_upper_cases_the_gold_letter():  # docs/method.md §8
    lp_with = {"A": math.log(0.8), "B": math.log(0.2)}
    lp_without = {"A": math.log(0.4), "B": math.log(0.6)}
    t = traj(RETRIEVED, answer_lp=lp_with, no_ret_lp=lp_without)
    upper = call(confidence_gain_reward, [t], answer_label=["A"])
    lower = call(confidence_gain_reward, [t], answer_label=["a"])
    assert upper == lower == [pytest.approx(math.log(2.0))]
    direct = traj([("<think> d </think><answer> A </answer>", False)], answer_lp=lp_with, no_ret_lp=lp_with)
    assert call(confidence_gain_reward, [direct], answer_label=["A"]) == [0.0]
    unlocated = traj(RETRIEVED)
    assert call(confidence_gain_reward, [unlocated], answer_label=["A"]) == [None]
    no_cf = traj(RETRIEVED, answer_lp=lp_with)  # scored with counterfactual=False
    with pytest.raises(ValueError, match="counterfactual"):
        call(confidence_gain_reward, [no_cf], answer_label=["A"])


def test_stage_rewards_paper_weights():
    funcs, w = stage_rewards(1)
    assert [f.__name__ for f in funcs] == ["format", "accuracy"] and w == [1.0, 5.0]
    funcs, w = stage_rewards(2, QuerySemanticReward(small_ner()))
    assert [f.__name__ for f in funcs] == ["format", "accuracy", "query_semantic", "confidence_gain"]
    assert w == [1.0, 5.0, 0.4, 5.0] == list(PAPER_WEIGHTS.values())
    with pytest.raises(ValueError, match="QuerySemanticReward"):
        stage_rewards(2)


def test_reward_registry_names_weights_and_stages():
    """One registry: each entry's name is its TRL metric name, the weights and stages derive from it."""
    from training.rewards import REWARDS, STAGE_REWARDS, stage_weights

    for name, reward in REWARDS.items():
        assert (reward.fn or QuerySemanticReward(small_ner())).__name__ == name
    assert PAPER_WEIGHTS == {name: r.weight for name, r in REWARDS.items()}
    assert STAGE_REWARDS == {1: ("format", "accuracy"), 2: tuple(REWARDS)}
    assert stage_weights(2) == [1.0, 5.0, 0.4, 5.0]
    with pytest.raises(ValueError, match="unknown stage"):
        stage_rewards(3)


def test_lexicon_from_medquad_and_slake_kg():
    lex = build_lexicon(
        SAMPLE_DATA_DIR / "medquad" / "medquad_qa.jsonl.gz", SAMPLE_DATA_DIR / "slake" / "KG_mvqa-kg"
    )
    assert lex.terms["adult acute lymphoblastic leukemia"] == "C0751606"  # MedQuAD focus -> its CUI
    assert lex.terms["liver"].startswith(("SLAKE:", "C"))
    ner = LexiconNER(lex)
    found = ner.spans("Lung cancer spread to the liver")
    assert [(s, e) for s, e, _ in found][0] == (0, 11)  # "lung cancer" as one entity, leftmost-longest
    assert len(ner.entities(["", "no medical words here"])[1]) == 0
    assert np.isfinite(len(lex.concepts()))


def test_stage2_refuses_a_random_weight_image_embedder(tmp_path):
    """q_image from a random-weight CLIP is noise: the trainer refuses it unless the run says it is plumbing
    (the bundled profiles pass --allow-random-image-embedder)."""
    from training import launch

    lexicon = tmp_path / "lexicon.json"
    small_ner().lexicon.save(lexicon)
    base = ["--stage", "2", "--items", "x", "--kb-uri", "x", "--base-model", "x", "--output-dir", "x"]
    args = launch.parse_args([*base, "--lexicon", str(lexicon), "--image-embedder", "ViT-S-32"])
    with pytest.raises(SystemExit, match="random weights"):
        launch.build_query_reward(args)
    reward, terms = launch.build_query_reward(
        launch.parse_args([*base, "--lexicon", str(lexicon), "--allow-random-image-embedder"])
    )
    assert reward.image_embedder.random_weights and terms == 5


def test_lexicon_grows_from_pubmedqa_mesh_headings(tmp_path):
    """PubMedQA's MeSH headings add entities (inverted headings in both orders), never the check tags; a
    gold answer the MedQuAD + SLAKE lexicon finds nothing in now has an entity."""
    medquad = SAMPLE_DATA_DIR / "medquad" / "medquad_qa.jsonl.gz"
    kg = SAMPLE_DATA_DIR / "slake" / "KG_mvqa-kg"
    pubmedqa = SAMPLE_DATA_DIR / "pubmedqa" / "ori_pqal.json"
    before, after = build_lexicon(medquad, kg), build_lexicon(medquad, kg, pubmedqa)
    assert len(after.terms) > len(before.terms)
    assert after.terms["tomography x ray computed"] == after.terms["x ray computed tomography"]
    assert after.terms["tomography x ray computed"] == "MESH:Tomography, X-Ray Computed"
    assert "humans" not in after.terms and "female" not in after.terms  # MeSH check tags
    gold = "Contrast-enhanced X-ray computed tomography of the abdomen"
    assert not LexiconNER(before).entities([gold])[0] and LexiconNER(after).entities([gold])[0]
    # bad input names the file
    broken = tmp_path / "ori_pqal.json"
    broken.write_text("[1, 2]")
    with pytest.raises(ValueError, match="ori_pqal.json"):
        build_lexicon(None, None, broken)
    with pytest.raises(FileNotFoundError, match="ori_pqal.json"):
        build_lexicon(None, None, tmp_path / "missing" / "ori_pqal.json")
