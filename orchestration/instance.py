"""The project's Dagster instance folder (``$DAGSTER_HOME``), shared by the main command and the UI
launcher."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage.root import project_dir

DAGSTER_YAML = Path(__file__).with_name("dagster.yaml")


def ensure_dagster_home() -> Path:
    """``$DAGSTER_HOME``, defaulting to ``<project>/.medrwr/dagster_home`` with our ``dagster.yaml``."""
    home = Path(os.environ.get("DAGSTER_HOME") or project_dir() / ".medrwr" / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
