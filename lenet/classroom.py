"""A classroom's bookkeeping of runs, without Streamlit: who started and stopped each run, and a runs folder that
stays within a size limit.

runs/<id>/actions.jsonl   one JSON object a line: {"when": ISO time, "action": "start" | "stop" | "resume", "who": ...}

Each record is one write() of one whole line to a file opened for appending, so two sessions stopping the same
run at once give two whole lines, never a mixed one; a reader skips any line that is not a record (a torn last line
after a crash, a hand edit) and keeps the others.
"""

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .files import locked

ACTIONS_FILE = "actions.jsonl"
LIMIT_VARIABLE = "LENET_RUNS_MAX_MB"
DEFAULT_LIMIT_MB = 1024  # a `best` run takes about 16 MB, a 1,000-epoch run about 250 MB (an epoch's weights each)
KEEP_NEWEST_RUNS = 5  # never pruned, whatever their size
ACTIONS = ("start", "stop", "resume")
MAX_WHO_CHARACTERS = 64  # "teacher" or "session 3fa2c1": anything longer is not ours


@dataclass(frozen=True)
class Action:
    when: str  # ISO 8601, UTC, to the second
    action: str
    who: str


def record_action(run_folder: Path | str, action: str, who: str, when: datetime | None = None) -> Action:
    """Append one action to the run's record; OSError when the folder cannot be written."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    record = Action((when or datetime.now(UTC)).isoformat(timespec="seconds"), action, who[:MAX_WHO_CHARACTERS])
    line = (json.dumps({"when": record.when, "action": record.action, "who": record.who}) + "\n").encode()
    descriptor = os.open(Path(run_folder) / ACTIONS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)  # one write of a whole line with O_APPEND: appends never interleave
    finally:
        os.close(descriptor)
    return record


def read_actions(run_folder: Path | str) -> list[Action]:
    """The run's actions, oldest first; lines that are not a whole record are skipped; no file: none."""
    try:
        text = (Path(run_folder) / ACTIONS_FILE).read_text(errors="replace")
    except OSError:
        return []
    actions = []
    for line in text.splitlines():
        try:
            values = json.loads(line)
        except ValueError:
            continue
        if not isinstance(values, dict):
            continue
        when, action, who = values.get("when"), values.get("action"), values.get("who")
        if action in ACTIONS and isinstance(when, str) and _is_time(when) and isinstance(who, str):
            actions.append(Action(when, action, who[:MAX_WHO_CHARACTERS]))
    return actions


def _is_time(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


# -- the runs folder's size ----------------------------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    """The size of every file under folder (files that vanish meanwhile count as nothing)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def being_trained(folder: Path) -> bool:
    """Whether some process trains this run now: its trainer holds the run's .lock (see lenet.runs)."""
    return locked(folder / ".lock")


def run_folders(runs_dir: Path | str) -> list[Path]:
    """The run folders (those with a config.json), oldest first: their names start with when they started."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return sorted(folder for folder in runs_dir.iterdir() if folder.is_dir() and (folder / "config.json").is_file())


def _protected(folder: Path, protect: Iterable[Path | str]) -> bool:
    """Whether a run folder is among protect: its id, the folder itself, or a file inside it (a checkpoint in use)."""
    folder = folder.resolve()
    for item in protect:
        if isinstance(item, str) and "/" not in item:  # a run id
            if item == folder.name:
                return True
            continue
        path = Path(item).resolve()
        if path == folder or folder in path.parents:
            return True
    return False


def prune_runs(runs_dir: Path | str, keep_bytes: int, keep_runs: int, protect: Iterable[Path | str] = ()) -> list[str]:
    """Delete the oldest runs until the runs folder holds at most keep_bytes; return the deleted runs' ids.

    Never deleted: the newest keep_runs runs, a run some process trains now, and a run in protect (ids, folders, or
    files inside a run, such as the checkpoint the app uses as its model). When those alone are over the limit,
    the folder stays over it.
    """
    protect = list(protect)
    folders = run_folders(runs_dir)
    sizes = {folder: folder_bytes(folder) for folder in folders}
    total = sum(sizes.values())
    newest = set(folders[-keep_runs:]) if keep_runs > 0 else set()
    deleted = []
    for folder in folders:  # oldest first
        if total <= keep_bytes:
            break
        if folder in newest or _protected(folder, protect) or being_trained(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            total -= sizes[folder]
            deleted.append(folder.name)
    return deleted


def runs_limit_bytes() -> int:
    """The runs folder's size limit: $LENET_RUNS_MAX_MB megabytes, else DEFAULT_LIMIT_MB (an unusable value: the default)."""
    try:
        megabytes = float(os.environ.get(LIMIT_VARIABLE) or DEFAULT_LIMIT_MB)
    except ValueError:
        megabytes = DEFAULT_LIMIT_MB
    return int(max(0.0, megabytes) * 1024 * 1024) if megabytes == megabytes else DEFAULT_LIMIT_MB * 1024 * 1024


class RunBusy(Exception):
    """The run cannot be deleted now; the message says why."""


def delete_run(runs_dir: Path | str, run_id: str, protect: Iterable[Path | str] = ()) -> None:
    """Delete one ended run's folder; RunBusy when it trains now or is protected, FileNotFoundError when absent."""
    runs_dir = Path(runs_dir)
    if not run_id or Path(run_id).name != run_id or run_id in (".", ".."):
        raise FileNotFoundError(f"{run_id!r} is not a run id")
    folder = runs_dir / run_id
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no run {run_id} in {runs_dir}")
    if being_trained(folder):
        raise RunBusy(f"run {run_id} is training: stop it first")
    if _protected(folder, protect):
        raise RunBusy(f"run {run_id} holds the model the app uses by default")
    shutil.rmtree(folder)
