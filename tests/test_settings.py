"""One configuration: every environment variable the code reads is listed (with its default) in
assets/common/settings.py and in README's settings table; libraries and readers read none; run knobs are
Dagster Config visible on the assets."""

import re
from pathlib import Path

from assets.common.settings import SETTINGS, readme_table
from orchestration.definitions import build_defs

REPO = Path(__file__).resolve().parents[1]


def test_readme_lists_every_setting():
    assert readme_table() in (REPO / "README.md").read_text()


def test_every_variable_in_code_is_a_listed_setting():
    listed = {s.env for s in SETTINGS}
    found = set()
    for folder in ("orchestration", "assets", "retrieval", "quality", "training", "storage"):
        for path in (REPO / folder).rglob("*.py"):
            found |= {m for m in re.findall(r"MEDRWR_[A-Z0-9_]+", path.read_text()) if not m.endswith("_")}
    not_settings = {"MEDRWR_SYNTH"}  # the synthetic DICOM files' ImplementationVersionName, not a variable
    unlisted = {v for v in found if v not in listed | not_settings and not v.startswith("MEDRWR_SOURCE_")}
    assert not unlisted, f"variables read but not listed in assets/common/settings.py: {sorted(unlisted)}"


def test_libraries_and_readers_do_not_read_the_environment():
    offenders = []
    pure = [p for folder in ("retrieval", "quality", "training") for p in (REPO / folder).rglob("*.py")]
    # assets/common/ is where the code location reads its settings (settings, resources, profiles, the audit)
    pure += [
        p
        for p in (REPO / "assets").rglob("*.py")
        if p.name not in ("assets.py", "definitions.py") and "common" not in p.parts
    ]
    for path in pure:
        text = path.read_text()
        if re.search(r"os\.environ|os\.getenv", text):
            offenders.append(str(path.relative_to(REPO)))
    assert not offenders, offenders


def test_run_knobs_are_config_on_the_assets():
    defs = build_defs()
    with_config = {}
    for node in defs.resolve_implicit_global_asset_job_def().graph.node_defs:
        schema = node.config_schema
        if schema is not None and getattr(schema, "config_type", None) is not None:
            fields = getattr(schema.config_type, "fields", {}) or {}
            with_config[node.name] = set(fields)
    assert {"image_check", "max_quarantine_share"} <= with_config["vqa_items"]
    assert {"synthetic_clips", "synthetic_seed", "accept_full_frame"} <= with_config["echo_studies"]
    assert {"seed"} <= with_config["ecbench"]
    assert {"max_records"} <= with_config["kb_passages"]
