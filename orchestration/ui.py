"""The Dagster UI started with the settings of the runs it shows.

    python -m orchestration.ui [--host 127.0.0.1] [--port 3000] [--print]      (what ``make ui`` runs)

Runs launched from the UI execute in the code server that ``dagster dev`` starts, with ``dagster dev``'s
environment. A UI started in a shell without the main command's ``MEDRWR_STORAGE_ROOT`` would therefore write
its materializations to another root than the runs it lists. To prevent that, the main command records its
resolved run settings next to the instance (``$DAGSTER_HOME/medrwr.env``, shell syntax) and this command
starts ``dagster dev`` with exactly those. A shell that sets one of them to a different value is refused
with both values named, never silently overridden. Secrets (``MEDRWR_DEID_SALT``, AWS keys) are never
written: they come from the shell as usual.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from assets.common.settings import ECHO_SOURCE_PREFIX, SETTINGS
from storage.root import ENV_PROJECT_DIR, ENV_ROOT, default_storage_root, project_dir

from .instance import ensure_dagster_home

SETTINGS_FILE = "medrwr.env"
ENV_RESTRICTED_ROOT = "MEDRWR_RESTRICTED_ROOT"
ENV_PROFILE = "MEDRWR_PROFILE"
SECRET_SETTINGS = frozenset({"MEDRWR_DEID_SALT"})
# non-secret AWS settings that decide which S3 endpoint and region a run talks to
AWS_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")
# settings of the main command only: they never change what a run launched from the UI reads or writes
MAIN_ONLY = frozenset(
    {
        "MEDRWR_LOG_LEVEL",
        "MEDRWR_VQA_DATASETS",
        "MEDRWR_TEXT_QA_DATASETS",
        "MEDRWR_ECHO_SOURCES",
        "MEDRWR_KB_SOURCES",
    }
)
REPO_DIR = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_DIR / "workspace.yaml"


AUTOMATION_SETTINGS = frozenset(
    {
        "MEDRWR_SENSORS_RUNNING",
        "MEDRWR_KB_SENSOR_COOLDOWN_S",
        "MEDRWR_RETRAIN_COOLDOWN_S",
        "MEDRWR_RETRAIN_STAGES",
    }
)
"""Sensor settings: when and what the automation requests, not where runs read and write; the UI's shell may
set them freely (they pass through to ``dagster dev``)."""


class SettingsConflict(RuntimeError):
    """The shell sets a run setting to another value than the runs recorded in the Dagster instance used."""


def carried_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of the environment variables a run's reads and writes depend on (secrets excluded).

    Every non-secret variable of :data:`assets.common.settings.SETTINGS` that reaches a resource, each
    ``MEDRWR_SOURCE_<DATASET>`` present in ``environ`` except the echo sites' ``MEDRWR_SOURCE_ECHO_<SITE>``
    (patient-data folders, whose paths may name a person: never written under ``DAGSTER_HOME``), and the
    non-secret AWS endpoint and region.
    """
    env = os.environ if environ is None else environ
    names = [
        s.env
        for s in SETTINGS
        if "<" not in s.env
        and s.env != "DAGSTER_HOME"
        and s.env not in SECRET_SETTINGS
        and s.env not in MAIN_ONLY
        and s.env not in AUTOMATION_SETTINGS
    ]
    names += sorted(k for k in env if k.startswith("MEDRWR_SOURCE_") and not k.startswith(ECHO_SOURCE_PREFIX))
    return names + [k for k in AWS_SETTINGS if k not in names]


def _absolute(value: str) -> str:
    return value if "://" in value else str(Path(value).expanduser().resolve())


def _normalized(name: str, value: str) -> str:
    """Folders made absolute (a relative path means another place from another working directory)."""
    folders = (ENV_ROOT, ENV_RESTRICTED_ROOT, ENV_PROJECT_DIR, "MEDRWR_DATA_DIR")
    return _absolute(value) if name in folders or name.startswith("MEDRWR_SOURCE_") else value


def run_settings(profile: str | None = None) -> dict[str, str]:
    """The run settings of the current process, resolved: what a run started now would use.

    The storage root, the restricted root, the project folder and the profile are always included (local
    paths made absolute, defaults spelled out), so a UI started from another folder writes to the same
    places; every other carried setting is included when it is set. Reads ``os.environ``.
    """
    env = os.environ
    settings = {
        ENV_PROJECT_DIR: str(project_dir()),
        ENV_ROOT: _absolute(default_storage_root()),
        ENV_RESTRICTED_ROOT: _absolute(
            env.get(ENV_RESTRICTED_ROOT) or str(project_dir() / ".medrwr" / "restricted")
        ),
        ENV_PROFILE: profile or env.get(ENV_PROFILE) or "smoke",
    }
    for name in carried_settings(env):
        if name not in settings and env.get(name):
            settings[name] = _normalized(name, env[name])
    return settings


def record_run_settings(home: str | Path, settings: Mapping[str, str]) -> Path:
    """Write ``settings`` to ``<home>/medrwr.env`` (one ``NAME=value`` line each, shell-quoted); returns the
    path."""
    unknown = set(settings) & SECRET_SETTINGS
    if unknown:
        raise ValueError(f"refusing to record secret settings {sorted(unknown)} in {home}/{SETTINGS_FILE}")
    path = Path(home) / SETTINGS_FILE
    text = "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(settings.items()))
    tmp = path.with_suffix(".env.tmp")
    tmp.write_text(
        "# run settings of the last main command in this Dagster instance (orchestration/ui.py)\n" + text
    )
    tmp.replace(path)
    return path


def load_run_settings(home: str | Path) -> dict[str, str] | None:
    """The settings recorded in ``<home>/medrwr.env``, or ``None`` when no main command has recorded any."""
    path = Path(home) / SETTINGS_FILE
    if not path.exists():
        return None
    settings: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, raw = line.partition("=")
        words = shlex.split(raw) if sep else []
        if not sep or not name.isidentifier() or len(words) > 1:
            raise ValueError(
                f"{path}:{number}: expected NAME=value, got {line!r}; delete the file and rerun "
                "the main command to record it again"
            )
        settings[name] = words[0] if words else ""
    return settings


def ui_environment(
    home: str | Path, recorded: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, str]:
    """The environment for ``dagster dev``: ``environ`` with every carried setting replaced by ``recorded``.

    Raises :class:`SettingsConflict` naming each setting that ``environ`` sets to a value other than the
    recorded one (a recorded default counts: a shell that sets ``MEDRWR_TEXT_EMBEDDER`` while the runs used
    the default is a conflict too).
    """
    names = set(carried_settings(environ)) | set(recorded)
    conflicts = []
    for name in sorted(names):
        shell = environ.get(name)
        if not shell:
            continue
        ours = recorded.get(name)
        if _normalized(name, shell) != ours:
            was = repr(ours) if ours is not None else "the default"
            conflicts.append(f"  {name}: {shell!r} in this shell, but the runs in {home} used {was}")
    if conflicts:
        raise SettingsConflict(
            "the UI would write to other places than the runs it shows:\n"
            + "\n".join(conflicts)
            + "\nunset these variables (the UI then uses the recorded values), or point DAGSTER_HOME "
            "at another instance for runs with these settings"
        )
    env = {k: v for k, v in environ.items() if k not in names}
    env.update(recorded)
    env["DAGSTER_HOME"] = str(home)
    return env


def ui_command(host: str = "127.0.0.1", port: int = 3000) -> list[str]:
    """``dagster dev`` (web server + daemon, so runs launched from the UI leave the queue) on ``host:port``.

    Run it in :data:`REPO_DIR` (``workspace.yaml`` is named relative to it).
    """
    dagster = Path(sys.executable).with_name("dagster")
    return [str(dagster), "dev", "-w", WORKSPACE.name, "-h", host, "-p", str(port)]


def launch_spec(
    home: str | Path, host: str = "127.0.0.1", port: int = 3000, environ: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start the UI for the instance at ``home`` (run it in
    :data:`REPO_DIR`).

    Uses the settings recorded there by the main command; when none are recorded yet, records those of the
    current environment first (the first runs, launched from the UI, then use them too).
    """
    env = dict(os.environ if environ is None else environ)
    recorded = load_run_settings(home)
    if recorded is None:
        recorded = run_settings()
        record_run_settings(home, recorded)
    return ui_command(host, port), ui_environment(home, recorded, env)


def command_line(
    home: str | Path, settings: Mapping[str, str], host: str = "127.0.0.1", port: int = 3000
) -> str:
    """The UI command as one shell line with its settings, for people to copy (it works from any folder)."""
    assignments = [f"DAGSTER_HOME={shlex.quote(str(home))}"]
    assignments += [f"{k}={shlex.quote(v)}" for k, v in sorted(settings.items())]
    return " ".join(
        [f"cd {shlex.quote(str(REPO_DIR))} &&"] + assignments + [shlex.join(ui_command(host, port))]
    )


def ui_hint(home: str | Path, settings: Mapping[str, str]) -> str:
    """What the main command prints under ``UI:``: ``make ui``, the equivalent shell line, secrets to
    export."""
    lines = [f"make ui   (= {command_line(home, settings)})  -> http://127.0.0.1:3000"]
    for name in sorted(SECRET_SETTINGS | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}):
        if os.environ.get(name):
            lines.append(
                f"                {name} is set here and not recorded (a secret): "
                "export it in the UI's shell too"
            )
    for name in sorted(k for k in os.environ if k.startswith(ECHO_SOURCE_PREFIX)):
        lines.append(
            f"                {name} is set here and not recorded (a patient-data folder): "
            "export it in the UI's shell too"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--print", action="store_true", help="print the command with its settings and exit")
    args = parser.parse_args(argv)
    home = ensure_dagster_home()
    try:
        command, env = launch_spec(home, args.host, args.port)
    except SettingsConflict as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    recorded = {k: env[k] for k in load_run_settings(home) or {}}
    if args.print:
        print(command_line(home, recorded, args.host, args.port))
        return 0
    print(
        f"UI for {home} with {ENV_ROOT}={recorded.get(ENV_ROOT)} -> http://{args.host}:{args.port}",
        flush=True,
    )
    os.chdir(REPO_DIR)
    os.execve(command[0], command, env)
    return 0  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main())
