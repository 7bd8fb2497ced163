"""Load, validate and freeze workflow definitions written in Elastic Workflows YAML.

Every problem in a file is reported at once, each at its file:line:column (the checks
themselves live in :mod:`engine.definition.checks`); :func:`validate_paths` also reports
the step-type plug-ins that cannot be imported. Workflows are found by ``name`` in a
directory through :class:`WorkflowCatalog`, and a run's own definition is read back
from its stored text with :func:`stored_workflow` (read and checked once per digest).
"""

from __future__ import annotations

import difflib
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.definition.checks import Analysis, TemplateCondition
from engine.definition.model import Workflow
from engine.definition.step_types import PLUGIN_GROUP, PluginFailure, plugin_failures
from engine.definition.yaml_positions import Position
from engine.errors import Problem, WorkflowInvalid, WorkflowNotFound

__all__ = [
    "TemplateCondition",
    "WorkflowCatalog",
    "load_workflow",
    "parse_workflow",
    "validate_paths",
    "stored_workflow",
    "workflow_files",
]

WORKFLOW_SUFFIXES = (".yml", ".yaml")


def parse_workflow(text: str, source: str = "<string>") -> Workflow:
    """Parse, validate and freeze a workflow; WorkflowInvalid lists every problem by line."""
    analysis = Analysis(text, source)
    workflow = analysis.run()
    if workflow is None:
        raise WorkflowInvalid(analysis.sorted_problems())
    return workflow


def load_workflow(path: str | os.PathLike[str]) -> Workflow:
    """Read and parse the workflow file at ``path`` (problems name it as given)."""
    text, problem = _read(path)
    if text is None:
        raise WorkflowInvalid([problem] if problem else [])
    return parse_workflow(text, os.fspath(path))


def validate_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Problem]:
    """Every problem in the given files and directories (searched for *.yml/*.yaml),
    after one for each step-type plug-in that cannot be imported."""
    problems = [_plugin_problem(failure) for failure in plugin_failures()]
    first_by_name: dict[str, str] = {}
    paths = list(paths)
    calls: list[tuple[str, str, Position]] = []  # file, workflow-id, where
    for path in _workflow_files(paths):
        text, problem = _read(path)
        if text is None:
            problems.extend([problem] if problem else [])
            continue
        analysis = Analysis(text, os.fspath(path))
        analysis.run()
        name, where = analysis.declared_name, analysis.name_position
        if name is not None and where is not None:
            if name in first_by_name:
                analysis.problems.append(Problem(
                    os.fspath(path), where.line, where.column,
                    f"workflow name {name!r} is already used by {first_by_name[name]}; "
                    "workflows are looked up by name, so give each file its own"))
            else:
                first_by_name[name] = f"{os.fspath(path)}:{where.line}"
        problems.extend(analysis.sorted_problems())
        calls.extend((os.fspath(path), name, where) for name, where in analysis.called_workflows())
    # A directory is a catalog, as a worker's SIGNOFF_WORKFLOWS is: a call to a workflow that
    # is not in it cannot run. Files named one by one say nothing of what else exists.
    if any(Path(given).is_dir() for given in paths):
        for source, name, where in calls:
            if name not in first_by_name:
                hint = difflib.get_close_matches(name, list(first_by_name), n=1, cutoff=0.6)
                problems.append(Problem(source, where.line, where.column, (
                    f"with.workflow-id names {name!r}, but no workflow of that name is among the "
                    "files validated" + (f" (did you mean {hint[0]!r}?)" if hint else
                                         f" (there are: {', '.join(sorted(first_by_name))})"))))
    return problems


def _plugin_problem(failure: PluginFailure) -> Problem:
    return Problem(f"<{PLUGIN_GROUP} plug-in {failure.name}>", 1, 1,
                   f"the {PLUGIN_GROUP} plug-in {failure.name!r} ({failure.value}) could not be "
                   f"imported: {failure.error}; the step types it registers are unknown until "
                   "it imports")


@dataclass
class _CatalogEntry:
    stamp: tuple[int, int]
    name: str
    workflow: Workflow | None
    problems: list[Problem]


class WorkflowCatalog:
    """The workflows in a directory, by ``name``; a changed file is read again on next use."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._entries: dict[Path, _CatalogEntry] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Workflow:
        """The workflow called ``name``; WorkflowNotFound or WorkflowInvalid otherwise."""
        with self._lock:
            self._refresh()
            matches = sorted((p, e) for p, e in self._entries.items() if e.name == name)
            available = self._names()
        if not matches:
            listed = ", ".join(available) if available else "none"
            raise WorkflowNotFound(
                f"no workflow named {name!r} in {self.directory} (available: {listed})")
        path, entry = matches[0]
        if len(matches) > 1:
            raise WorkflowInvalid([
                Problem(os.fspath(other), 1, 1, f"workflow name {name!r} is also used by {path}")
                for other, _ in matches[1:]])
        if entry.workflow is None:
            raise WorkflowInvalid(entry.problems)
        return entry.workflow

    def names(self) -> list[str]:
        """Names of every workflow file in the directory, valid or not, sorted."""
        with self._lock:
            self._refresh()
            return self._names()

    def _names(self) -> list[str]:
        return sorted({entry.name for entry in self._entries.values()})

    def _refresh(self) -> None:
        files = set(_workflow_files([self.directory])) if self.directory.is_dir() else set()
        for gone in set(self._entries) - files:
            del self._entries[gone]
        for path in files:
            try:
                stat = path.stat()
            except OSError:
                self._entries.pop(path, None)
                continue
            stamp = (stat.st_mtime_ns, stat.st_size)
            entry = self._entries.get(path)
            if entry is None or entry.stamp != stamp:
                self._entries[path] = self._load(path, stamp)

    @staticmethod
    def _load(path: Path, stamp: tuple[int, int]) -> _CatalogEntry:
        text, problem = _read(path)
        if text is None:
            return _CatalogEntry(stamp, path.stem, None, [problem] if problem else [])
        analysis = Analysis(text, os.fspath(path))
        workflow = analysis.run()
        # A file too broken to name itself is still found by its file name.
        name = analysis.declared_name or path.stem
        return _CatalogEntry(stamp, name, workflow, analysis.sorted_problems())


def stored_workflow(digest: str, read_text: Callable[[], str]) -> Workflow:
    """The workflow stored under ``digest``, read with ``read_text`` and checked against
    the digest only the first time this process needs it: a digest names one text
    forever. The last :data:`STORED_WORKFLOWS` digests are kept."""
    workflow = _parsed.get(digest)
    if workflow is None:
        workflow = _parse_stored(digest, read_text())
        with _parsed_lock:
            _parsed[digest] = workflow
            while len(_parsed) > STORED_WORKFLOWS:
                del _parsed[next(iter(_parsed))]  # the oldest
    return workflow


STORED_WORKFLOWS = 256
_parsed: dict[str, Workflow] = {}  # digest -> workflow, oldest first
_parsed_lock = threading.Lock()


def _parse_stored(digest: str, text: str) -> Workflow:
    source = f"<stored {digest[:12]}>"
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != digest:
        raise WorkflowInvalid([Problem(source, 1, 1, "the stored definition does not match "
                                                     "its sha256 digest; it was altered")])
    return parse_workflow(text, source)


def _read(path: str | os.PathLike[str]) -> tuple[str | None, Problem | None]:
    try:
        return Path(path).read_text(encoding="utf-8"), None
    except UnicodeDecodeError as exc:
        return None, Problem(os.fspath(path), 1, 1, f"cannot read: not UTF-8 text ({exc.reason})")
    except OSError as exc:
        return None, Problem(os.fspath(path), 1, 1, f"cannot read: {exc.strerror or exc}")


def workflow_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The workflow files :func:`validate_paths` reads, in its order."""
    return list(_workflow_files(paths))


def _workflow_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        found = [path] if not path.is_dir() else [
            candidate for candidate in sorted(path.rglob("*"))
            if candidate.suffix in WORKFLOW_SUFFIXES and candidate.is_file()
            and not any(part.startswith(".") for part in candidate.relative_to(path).parts)]
        for candidate in found:
            if candidate.resolve() not in seen:  # a file named twice is checked once
                seen.add(candidate.resolve())
                yield candidate


