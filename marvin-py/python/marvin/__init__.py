"""Marvin from Python: plan, build and deploy environments, run tasks, lock.

Every call goes to Marvin's Rust core (the native module ``marvin._marvin``)
and acts as the identity ``py:NAME`` under the project's permission rules::

    import marvin

    project = marvin.Project.load("marvin.yml")      # acts as py:$USER
    print(project.plan("dev").text)                  # changes nothing
    result = project.build("dev", on_event=print)    # blocks, GIL released
    print(result.text)                               # as the console prints it

Blocking calls release the GIL, so other Python threads keep running;
Ctrl-C cancels the running job cleanly, then raises ``KeyboardInterrupt``.
``build_async``, ``run_task_async`` and ``rollback_async`` are awaitable.
Errors are subclasses of :class:`MarvinError` carrying the console's message.
"""

from __future__ import annotations

import asyncio
import copy
import os
from typing import Any, Callable, Iterable, Optional

from . import _marvin
from ._marvin import (
    BuildFailed,
    ConfigError,
    DeployFailed,
    EngineUnavailable,
    JobCancelled,
    JobFailed,
    Locked,
    MarvinError,
    NotFound,
    PermissionDenied,
    TaskFailed,
)

#: The version of Marvin these bindings were built from.
__version__: str = _marvin.__version__

__all__ = [
    "__version__",
    "Project",
    "Plan",
    "BuildStep",
    "DeployStep",
    "Commit",
    "JobResult",
    "Job",
    "Lock",
    "Container",
    "Status",
    "Event",
    "create_demo",
    "MarvinError",
    "ConfigError",
    "PermissionDenied",
    "Locked",
    "EngineUnavailable",
    "NotFound",
    "JobFailed",
    "BuildFailed",
    "DeployFailed",
    "TaskFailed",
    "JobCancelled",
]

#: What ``on_event`` receives: a dict with ``job``, ``env``, ``event`` (``queued``,
#: ``started``, ``step``, ``commits``, ``build_started``, ``built``, ``reused``,
#: ``container``, ``log``, ``finished``) and that event's fields, e.g.
#: ``{"job": 3, "env": "dev", "event": "built", "service": "api", "millis": 812}``.
Event = dict

EventCallback = Callable[[Event], Any]


class Record:
    """A result: its fields as attributes, and ``to_dict()`` for the plain data."""

    _fields: tuple[str, ...] = ()

    def __init__(self, data: dict) -> None:
        self._data = {k: v for k, v in data.items() if not k.startswith("_")}
        for name in self._fields:
            setattr(self, name, self._convert(name, data.get(name)))

    def _convert(self, name: str, value: Any) -> Any:
        return value

    def to_dict(self) -> dict:
        """The plain data, with the same keys as the CLI's ``--json`` output."""
        return copy.deepcopy(self._data)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._data == other._data  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields[:4])
        return f"{type(self).__name__}({shown})"


class Commit(Record):
    """A repo's commit: ``repo``, ``id`` (full hex), ``author``, ``date`` (RFC 3339), ``subject``."""

    _fields = ("repo", "id", "author", "date", "subject")
    repo: str
    id: str
    author: str
    date: str
    subject: str


def _commits(value: Optional[list]) -> list[Commit]:
    return [Commit(c) for c in value or []]


class BuildStep(Record):
    """An image in a plan: ``service``, ``action`` (``build``/``reuse``), ``key``, ``image``, ``reason``."""

    _fields = ("service", "action", "key", "image", "reason")
    service: str
    action: str
    key: str
    image: str
    reason: str


class DeployStep(Record):
    """A container in a plan: ``service`` and ``action`` (``create``/``recreate``/``keep``/``remove``)."""

    _fields = ("service", "action")
    service: str
    action: str


class Plan(Record):
    """What ``build`` would do in an environment; ``text`` is the console's rendering."""

    _fields = ("environment", "commits", "builds", "deploy", "assumed_empty_engine")
    environment: str
    commits: list[Commit]
    builds: list[BuildStep]
    deploy: list[DeployStep]
    assumed_empty_engine: bool
    text: str

    def __init__(self, data: dict) -> None:
        super().__init__(data)
        self.text = data.get("_text", "")

    def _convert(self, name: str, value: Any) -> Any:
        if name == "commits":
            return _commits(value)
        if name == "builds":
            return [BuildStep(b) for b in value]
        if name == "deploy":
            return [DeployStep(d) for d in value]
        return value


class JobResult(Record):
    """The summary of a finished job; ``text`` is what the console prints for it."""

    _fields = (
        "job", "project", "env", "verb", "args", "who", "state", "duration_ms",
        "commits", "built", "reused", "created", "recreated", "removed",
        "unchanged", "rolled_back", "exit_code", "failed_step", "error", "last_lines",
    )
    job: int
    project: str
    env: str
    verb: str
    args: list[str]
    who: str
    state: Optional[str]
    duration_ms: int
    commits: list[Commit]
    built: list[tuple[str, int]]
    reused: list[str]
    created: list[str]
    recreated: list[str]
    removed: list[str]
    unchanged: list[str]
    rolled_back: list[str]
    exit_code: Optional[int]
    failed_step: Optional[str]
    error: Optional[str]
    last_lines: list[str]
    text: str

    def __init__(self, data: dict) -> None:
        super().__init__(data)
        self.text = data.get("_text", "")

    def _convert(self, name: str, value: Any) -> Any:
        if name == "commits":
            return _commits(value)
        if name == "built":
            return [(service, millis) for service, millis in value or []]
        return value

    @property
    def ok(self) -> bool:
        """True when the job succeeded."""
        return self.state == "succeeded"


class Job(Record):
    """A job from the history: who asked what, when, and how it ended."""

    _fields = (
        "id", "project", "env", "verb", "args", "who", "origin", "trigger", "state",
        "created_ms", "started_ms", "finished_ms", "result", "error",
    )
    id: int
    project: str
    env: str
    verb: str
    args: list[str]
    who: str
    origin: str
    trigger: str
    state: str
    created_ms: int
    started_ms: Optional[int]
    finished_ms: Optional[int]
    result: Optional[dict]
    error: Optional[str]


class Lock(Record):
    """A reservation of an environment: ``holder``, ``reason``, ``since_ms``, ``until_ms`` (None: until unlocked)."""

    _fields = ("project", "env", "holder", "reason", "since_ms", "until_ms")
    project: str
    env: str
    holder: str
    reason: str
    since_ms: int
    until_ms: Optional[int]


class Container(Record):
    """A container as the engine reports it now."""

    _fields = ("id", "name", "service", "labels", "image", "state", "health", "restart_count")
    id: str
    name: str
    service: str
    labels: dict[str, str]
    image: str
    state: str
    health: Optional[str]
    restart_count: int


class Status(Record):
    """An environment now: its ``containers``, its ``lock`` and its ``last_job``."""

    _fields = ("environment", "containers", "lock", "last_job")
    environment: str
    containers: list[Container]
    lock: Optional[Lock]
    last_job: Optional[Job]

    def _convert(self, name: str, value: Any) -> Any:
        if name == "containers":
            return [Container(c) for c in value]
        if name == "lock":
            return Lock(value) if value else None
        if name == "last_job":
            return Job(value) if value else None
        return value


def _job_result(call: Callable[[], dict]) -> JobResult:
    try:
        return JobResult(call())
    except JobFailed as failure:
        result = getattr(failure, "result", None)
        if isinstance(result, dict):
            failure.result = JobResult(result)  # type: ignore[attr-defined]
        raise


async def _job_result_async(awaitable: Any) -> JobResult:
    try:
        return JobResult(await awaitable)
    except JobFailed as failure:
        result = getattr(failure, "result", None)
        if isinstance(result, dict):
            failure.result = JobResult(result)  # type: ignore[attr-defined]
        raise


def _services(services: Optional[Iterable[str]]) -> Optional[list[str]]:
    if isinstance(services, str):
        return [services]
    return list(services) if services is not None else None


class Project:
    """A Marvin project loaded from its marvin.yml, acting as one identity.

    Load it with :meth:`Project.load`. Commands that change an environment
    (``build``, ``run_task``, ``rollback``, ``lock``) are checked against the
    identity's role and the environment's lock, as on every other front end.
    """

    def __init__(self, native: _marvin.Project) -> None:
        self._native = native

    @classmethod
    def load(
        cls,
        path: str | os.PathLike = ".",
        identity: Optional[str] = None,
        data_dir: Optional[str | os.PathLike] = None,
    ) -> "Project":
        """Load the project whose marvin.yml is ``path`` (a file, or a directory searched upwards).

        ``identity`` is who calls act as: ``"alice"`` becomes ``py:alice``;
        the default is ``py:$MARVIN_PY_IDENTITY``, else ``py:$USER``.
        ``data_dir`` defaults to ``$MARVIN_DATA_DIR``, else ``.marvin/`` beside
        marvin.yml. Raises :class:`ConfigError` (with ``line``/``column``
        when known) if the file is wrong.
        """
        return cls(_marvin.Project.load(os.fspath(path), identity, None if data_dir is None else os.fspath(data_dir)))

    def with_identity(self, identity: str) -> "Project":
        """The same project acting as another identity (``"bob"`` → ``py:bob``)."""
        return Project(self._native.with_identity(identity))

    @property
    def name(self) -> str:
        """The project's name (marvin.yml ``project``)."""
        return self._native.name

    @property
    def identity(self) -> str:
        """Who calls act as, e.g. ``py:alice``."""
        return self._native.identity

    @property
    def role(self) -> str:
        """The identity's role: ``viewer``, ``developer`` or ``admin``."""
        return self._native.role

    @property
    def config_path(self) -> str:
        """The marvin.yml this project was loaded from."""
        return os.fspath(self._native.config_path)

    @property
    def data_dir(self) -> str:
        """Where mirrors and the state database live."""
        return os.fspath(self._native.data_dir)

    @property
    def environments(self) -> list[str]:
        """The environments' names, in marvin.yml order."""
        return self._native.environments

    def plan(
        self,
        env: str,
        services: Optional[Iterable[str]] = None,
        *,
        force: bool = False,
        offline: bool = False,
    ) -> Plan:
        """What ``build`` would do in ``env``: images to build or reuse, containers to change.

        Fetches (unless ``offline``) and reads the engine, changes nothing.
        ``plan(...).to_dict()`` has the keys of ``marvin plan --json``.
        """
        return Plan(self._native.plan(env, _services(services), force, offline))

    async def plan_async(
        self,
        env: str,
        services: Optional[Iterable[str]] = None,
        *,
        force: bool = False,
        offline: bool = False,
    ) -> Plan:
        """:meth:`plan` without blocking the event loop."""
        return await asyncio.to_thread(self.plan, env, services, force=force, offline=offline)

    def build(
        self,
        env: str,
        services: Optional[Iterable[str]] = None,
        *,
        force: bool = False,
        on_event: Optional[EventCallback] = None,
    ) -> JobResult:
        """Fetch, build what changed and deploy what changed in ``env``; wait for the job.

        ``services`` limits the build to those services; ``force`` rebuilds
        images whose key is present. ``on_event`` is called in this thread
        with each progress event (see :data:`Event`), in order. Returns the
        job's :class:`JobResult`; raises :class:`BuildFailed` or
        :class:`DeployFailed` (``.result`` holds the summary) when it fails,
        :class:`PermissionDenied` or :class:`Locked` when it may not start.
        Ctrl-C cancels the job cleanly, then raises ``KeyboardInterrupt``.
        """
        return _job_result(lambda: self._native.build(env, _services(services), force, on_event))

    async def build_async(
        self,
        env: str,
        services: Optional[Iterable[str]] = None,
        *,
        force: bool = False,
        on_event: Optional[EventCallback] = None,
    ) -> JobResult:
        """:meth:`build` as a coroutine; jobs for different environments run concurrently.

        Cancelling the awaiting task cancels the job. Here ``on_event`` is
        called from Marvin's worker thread, not the event loop's: hand events
        to the loop with ``loop.call_soon_threadsafe`` if they touch asyncio objects.
        """
        return await _job_result_async(self._native.build_async(env, _services(services), force, on_event))

    def run_task(
        self,
        env: str,
        task: str,
        args: Optional[Iterable[str]] = None,
        *,
        on_event: Optional[EventCallback] = None,
    ) -> JobResult:
        """Run the task ``task`` from marvin.yml in ``env`` with ``args`` appended.

        Returns the :class:`JobResult` (``exit_code`` 0); raises
        :class:`TaskFailed` (with ``exit_code``) when it exits non-zero or cannot run.
        """
        return _job_result(lambda: self._native.run_task(env, task, list(args or []), on_event))

    async def run_task_async(
        self,
        env: str,
        task: str,
        args: Optional[Iterable[str]] = None,
        *,
        on_event: Optional[EventCallback] = None,
    ) -> JobResult:
        """:meth:`run_task` as a coroutine."""
        return await _job_result_async(self._native.run_task_async(env, task, list(args or []), on_event))

    def rollback(
        self,
        env: str,
        job: Optional[int] = None,
        *,
        on_event: Optional[EventCallback] = None,
    ) -> JobResult:
        """Redeploy what job ``job`` deployed to ``env`` (default: the deployment before the current)."""
        return _job_result(lambda: self._native.rollback(env, job, on_event))

    async def rollback_async(
        self,
        env: str,
        job: Optional[int] = None,
        *,
        on_event: Optional[EventCallback] = None,
    ) -> JobResult:
        """:meth:`rollback` as a coroutine."""
        return await _job_result_async(self._native.rollback_async(env, job, on_event))

    def status(self, env: str) -> Status:
        """What runs in ``env`` now, its lock and its last job (as ``marvin status --json``)."""
        return Status(self._native.status(env))

    def history(self, env: str, n: int = 10) -> list[Job]:
        """The newest ``n`` jobs of ``env``, newest first."""
        return [Job(j) for j in self._native.history(env, n)]

    def logs(self, env: str, target: Optional[str | int] = None, tail: int = 100) -> list[str]:
        """The last ``tail`` lines of a log.

        ``target`` is a job number (default: the last job; lines read
        ``[stream] text``) or a service name (its container's output).
        """
        return self._native.logs(env, target, tail)

    def lock(self, env: str, duration: Optional[str] = None, reason: str = "", force: bool = False) -> Lock:
        """Lock ``env`` for ``duration`` (``"30m"``, ``"2h"``; None: the default, 2h).

        Others' builds are then refused with :class:`Locked`; the holder may
        still build. Locking again renews the caller's own lock; ``force``
        lets an admin take over someone else's.
        """
        return Lock(self._native.lock(env, duration, reason, force))

    def unlock(self, env: str, force: bool = False) -> Optional[Lock]:
        """Release ``env``'s lock; ``force`` lets an admin release someone else's.

        Returns the released :class:`Lock`, or None when ``env`` was not locked.
        """
        released = self._native.unlock(env, force)
        return Lock(released) if released else None

    def cancel(self, env: str, job: Optional[int] = None) -> int:
        """Ask ``env``'s running job (or job ``job``) to stop; returns its number.

        The requester, admins, and developers on unprotected environments may;
        anyone else gets :class:`PermissionDenied` and the job goes on. The
        process running the job stops it within a second.
        """
        return self._native.cancel(env, job)

    def remove_engine_objects(self) -> None:
        """Remove every container, network, volume and image labelled with this project."""
        self._native.remove_engine_objects()

    def __repr__(self) -> str:
        return repr(self._native)


def create_demo(dir: str | os.PathLike, project: Optional[str] = None) -> str:
    """Create Marvin's demo project in ``dir`` (two git repos, five services, two environments).

    ``project`` renames it, so several demos can share an engine. Makes sure
    the demo's busybox base image exists. Returns the path of its marvin.yml.
    """
    return os.fspath(_marvin.create_demo(os.fspath(dir), project))
