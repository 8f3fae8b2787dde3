"""The project's Dagster instance folder (``$DAGSTER_HOME``), shared by the main command and the UI
launcher."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from storage.root import project_dir

DAGSTER_YAML = Path(__file__).with_name("dagster.yaml")


def dagster_home_path() -> Path:
    """``$DAGSTER_HOME``, defaulting to ``<project>/.medrwr/dagster_home`` (not created)."""
    return Path(os.environ.get("DAGSTER_HOME") or project_dir() / ".medrwr" / "dagster_home")


def ensure_dagster_home() -> Path:
    """:func:`dagster_home_path`, created, with our ``dagster.yaml``."""
    home = dagster_home_path().resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
