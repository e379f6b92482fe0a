"""Type stubs for the native half of the ``marvin`` package (built from marvin-py/src/lib.rs).

Its calls return plain dicts and lists; the ``marvin`` package wraps them in objects.
"""

import os
from typing import Any, Awaitable, Callable, Optional

_Path = str | os.PathLike[str]
_Callback = Optional[Callable[[dict[str, Any]], Any]]

__version__: str

class MarvinError(Exception):
    """Base of every error Marvin raises; the message is the one the console prints."""

class ConfigError(MarvinError):
    """marvin.yml is missing or wrong, or names an unknown environment, task or service."""

    file: Optional[str]
    line: Optional[int]
    column: Optional[int]
    path: Optional[str]

class PermissionDenied(MarvinError):
    """The identity's role does not allow the command in this environment."""

class Locked(MarvinError):
    """Someone else holds the environment's lock."""

    env: str
    holder: str
    reason: str
    since_ms: int
    until_ms: Optional[int]

class EngineUnavailable(MarvinError):
    """No Docker engine answers (dockerd not running, or DOCKER_HOST wrong)."""

class NotFound(MarvinError):
    """A job or container that was asked for does not exist."""

class JobFailed(MarvinError):
    """A job ended without succeeding; ``result`` is its summary."""

    result: Any

class BuildFailed(JobFailed):
    """A build failed while fetching, planning or building images; no container was changed."""

class DeployFailed(JobFailed):
    """A build or rollback failed while deploying; changed containers were put back."""

class TaskFailed(JobFailed):
    """A task did not run or exited non-zero."""

    exit_code: Optional[int]

class JobCancelled(JobFailed):
    """The job was cancelled."""

class Project:
    """A Marvin project loaded from its marvin.yml, acting as one identity."""

    @staticmethod
    def load(path: _Path, identity: Optional[str] = None, data_dir: Optional[_Path] = None) -> Project:
        """Load the project whose marvin.yml is ``path``."""
    def with_identity(self, identity: str) -> Project:
        """The same project acting as another identity."""
    @property
    def name(self) -> str:
        """The project's name."""
    @property
    def identity(self) -> str:
        """Who calls act as, e.g. ``py:alice``."""
    @property
    def role(self) -> str:
        """The identity's role."""
    @property
    def config_path(self) -> str:
        """The marvin.yml this was loaded from."""
    @property
    def data_dir(self) -> str:
        """Where mirrors and the state database live."""
    @property
    def environments(self) -> list[str]:
        """The environments' names."""
    def plan(
        self, env: str, services: Optional[list[str]] = None, force: bool = False, offline: bool = False
    ) -> dict[str, Any]:
        """The plan as ``marvin plan --json`` prints it, plus ``_text``."""
    def build(
        self, env: str, services: Optional[list[str]] = None, force: bool = False, on_event: _Callback = None
    ) -> dict[str, Any]:
        """Run a build job to its end; the summary dict."""
    def build_async(
        self, env: str, services: Optional[list[str]] = None, force: bool = False, on_event: _Callback = None
    ) -> Awaitable[dict[str, Any]]:
        """``build`` as an awaitable."""
    def run_task(
        self, env: str, task: str, args: Optional[list[str]] = None, on_event: _Callback = None
    ) -> dict[str, Any]:
        """Run a task job to its end; the summary dict."""
    def run_task_async(
        self, env: str, task: str, args: Optional[list[str]] = None, on_event: _Callback = None
    ) -> Awaitable[dict[str, Any]]:
        """``run_task`` as an awaitable."""
    def rollback(self, env: str, job: Optional[int] = None, on_event: _Callback = None) -> dict[str, Any]:
        """Run a rollback job to its end; the summary dict."""
    def rollback_async(
        self, env: str, job: Optional[int] = None, on_event: _Callback = None
    ) -> Awaitable[dict[str, Any]]:
        """``rollback`` as an awaitable."""
    def status(self, env: str) -> dict[str, Any]:
        """As ``marvin status --json``."""
    def history(self, env: str, n: int = 10) -> list[dict[str, Any]]:
        """The newest jobs, newest first."""
    def logs(self, env: str, target: Optional[str | int] = None, tail: int = 100) -> list[str]:
        """A job's or a service's last log lines."""
    def lock(
        self, env: str, duration: Optional[str] = None, reason: str = "", force: bool = False
    ) -> dict[str, Any]:
        """Take or renew the environment's lock."""
    def unlock(self, env: str, force: bool = False) -> Optional[dict[str, Any]]:
        """Release the environment's lock."""
    def cancel(self, env: str, job: Optional[int] = None) -> int:
        """Ask a running job to stop; its number."""
    def remove_engine_objects(self) -> None:
        """Remove every engine object labelled with this project."""

def create_demo(dir: _Path, project: Optional[str] = None) -> str:
    """Create the demo project; the path of its marvin.yml."""
