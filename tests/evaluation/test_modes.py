"""The evaluation-mode registry is the one place modes are declared: everything else derives from it."""

from assets.evaluation.assets import EvalConfig
from training.evaluation import metrics, plots, results
from training.evaluation.modes import (
    DEFAULT_COMPARISONS,
    IMAGE_CONTROL_MODES,
    MODES,
    REGISTRY,
    RETRIEVAL_MODES,
)


def test_registry_lists_the_modes_in_order():
    assert MODES == (
        "direct",
        "rwr",
        "rwr_cdir",
        "rag_control",
        "random_retriever",
        "blank_image",
        "shuffled_image",
    )
    assert all(REGISTRY[name].name == name and callable(REGISTRY[name].run) for name in MODES)


def test_everything_derives_from_the_registry():
    assert results.MODES == MODES and results.RETRIEVAL_MODES == RETRIEVAL_MODES
    assert RETRIEVAL_MODES == (
        "rwr",
        "rwr_cdir",
        "rag_control",
        "random_retriever",
        "blank_image",
        "shuffled_image",
    )
    assert IMAGE_CONTROL_MODES == ("blank_image", "shuffled_image")
    assert set(plots._MODE_COLOURS) == set(MODES)
    assert EvalConfig().modes == list(MODES)
    assert metrics.DEFAULT_COMPARISONS == DEFAULT_COMPARISONS


def test_default_comparisons_are_the_reports():
    assert DEFAULT_COMPARISONS == (
        ("rwr", "direct"),
        ("rwr", "random_retriever"),
        ("rwr", "rag_control"),
        ("rwr", "blank_image"),
        ("rwr", "shuffled_image"),
        ("rwr_cdir", "rwr"),
    )
    assert all(a in REGISTRY and b in REGISTRY for a, b in DEFAULT_COMPARISONS)


def test_only_cdir_needs_the_image_index_and_only_the_control_a_random_kb():
    assert [m for m in MODES if REGISTRY[m].image_index] == ["rwr_cdir"]
    assert [m for m in MODES if REGISTRY[m].random_kb] == ["random_retriever"]
