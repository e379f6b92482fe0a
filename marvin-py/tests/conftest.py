"""Fixtures: a demo project per test module on the real Docker engine, removed afterwards."""

import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

import marvin

REPO = pathlib.Path(__file__).resolve().parents[2]

# Tasks added to the demo's marvin.yml: one failing with a known code, one
# slow enough to be interrupted.
FAIL_TASK = """tasks:
  fail:
    image: marvin-demo/busybox:1
    command: ["sh", "-c", "echo failing on purpose; exit 3"]
  nap:
    image: marvin-demo/busybox:1
    command: ["sleep", "60"]
"""


def unique_name(prefix: str) -> str:
    """A project name no other test (or person) uses, so cleanup removes only ours."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def make_demo(root: pathlib.Path, prefix: str = "pytest") -> str:
    """The demo project under `root`, renamed, with the failing task added; its marvin.yml."""
    config = marvin.create_demo(root / "demo", project=unique_name(prefix))
    path = pathlib.Path(config)
    path.write_text(path.read_text().replace("tasks:\n", FAIL_TASK, 1))
    return config


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory):
    """marvin.yml of a fresh demo project; its Docker objects are removed after the module."""
    config = make_demo(tmp_path_factory.mktemp("demo"))
    yield config
    marvin.Project.load(config).remove_engine_objects()


@pytest.fixture(scope="module")
def project(demo_config):
    """The demo project acting as py:tester (a developer: the demo's default role)."""
    return marvin.Project.load(demo_config, identity="tester")


def marvin_cli() -> str:
    """The `marvin` binary: $MARVIN_BIN, else built with cargo into the target dir."""
    if os.environ.get("MARVIN_BIN"):
        return os.environ["MARVIN_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "marvin-cli"], cwd=REPO, check=True
    )
    binary = target / "debug" / "marvin"
    assert binary.exists(), f"cargo built no {binary}"
    return str(binary)


@pytest.fixture(scope="session")
def cli() -> str:
    return marvin_cli()


def python() -> str:
    """The interpreter running the tests (the venv's, where marvin is installed)."""
    import sys

    return sys.executable


def require(tool: str) -> None:
    assert shutil.which(tool), f"{tool} is needed by these tests; run scripts/setup"
