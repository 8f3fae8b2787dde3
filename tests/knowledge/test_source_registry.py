"""The KB source registry: one entry per known source, and every place that names KB sources follows it."""

from assets.common.profiles import DATASET_FOLDERS, KB_SOURCES
from assets.knowledge import sources
from assets.knowledge.watch import SOURCE_PATTERNS


def test_the_registry_is_the_list_of_known_sources():
    assert tuple(sources.REGISTRY) == KB_SOURCES == ("medquad", "pubmedqa", "slake_kg", "medmcqa_exp")
    assert sources.KB_READERS == {name: s.read for name, s in sources.REGISTRY.items()}
    assert SOURCE_PATTERNS == {name: s.patterns for name, s in sources.REGISTRY.items()}
    for name, source in sources.REGISTRY.items():
        assert source.name == name and source.patterns and name in DATASET_FOLDERS


def test_an_unregistered_source_is_read_as_a_medrag_corpus(tmp_path, chunker):
    import json

    from storage.sources import SourceDir

    record = {"id": "a1", "title": "Cardiology", "content": "Beta blockers lower the resting heart rate."}
    (tmp_path / "part.jsonl").write_text(json.dumps(record))
    frame, result = sources.read_kb_source("newcorpus", SourceDir(str(tmp_path)), chunker)
    assert frame["id"].to_list() == ["newcorpus:a1#0"] and not result.rejected
