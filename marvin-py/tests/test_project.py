"""The marvin package against the built extension and the real Docker engine.

The tests of this module share one demo project and run in file order: the
cheap refusals first, then the builds, then what reads their results.
"""

import asyncio
import json
import os
import signal
import subprocess
import threading
import time

import pytest

import marvin


def test_load_reads_the_project_and_acts_as_a_py_identity(project):
    assert project.name.startswith("pytest-")
    assert project.environments == ["dev", "staging"]
    assert project.identity == "py:tester"
    assert project.role == "developer"


def test_the_package_has_a_version_and_errors_named_by_the_package():
    import re

    assert re.fullmatch(r"\d+\.\d+\.\d+.*", marvin.__version__), marvin.__version__
    # Tracebacks show `marvin.BuildFailed`, the name users import, not the native module's.
    for error in (marvin.MarvinError, marvin.BuildFailed, marvin.ConfigError, marvin.Locked):
        assert error.__module__ == "marvin", error
    assert issubclass(marvin.BuildFailed, marvin.JobFailed)


def test_default_identity_is_py_user(demo_config, monkeypatch):
    monkeypatch.delenv("MARVIN_PY_IDENTITY", raising=False)
    monkeypatch.setenv("USER", "carol")
    assert marvin.Project.load(demo_config).identity == "py:carol"
    monkeypatch.setenv("MARVIN_PY_IDENTITY", "deploybot")
    assert marvin.Project.load(demo_config).identity == "py:deploybot"


def test_plan_has_the_keys_of_the_cli_plan_json(project, demo_config, cli):
    plan = project.plan("dev")
    out = subprocess.run(
        [cli, "-c", demo_config, "plan", "dev", "--json"],
        check=True,
        capture_output=True,
        text=True,
    )
    from_cli = json.loads(out.stdout)
    ours = plan.to_dict()
    assert ours.keys() == from_cli.keys()
    assert [b.keys() for b in ours["builds"]] == [b.keys() for b in from_cli["builds"]]
    assert [d.keys() for d in ours["deploy"]] == [d.keys() for d in from_cli["deploy"]]
    assert [c.keys() for c in ours["commits"]] == [c.keys() for c in from_cli["commits"]]
    assert ours == from_cli
    assert {b.service for b in plan.builds} == {"api", "db", "docs", "web", "worker"}
    assert all(b.action == "build" for b in plan.builds)
    assert plan.text.startswith(f"Plan for dev ({project.name})")


def test_a_bad_config_raises_config_error_with_line_and_column(tmp_path):
    config = tmp_path / "marvin.yml"
    config.write_text("project: shop\nrepos:\n  app: {url: /srv/app.git\nenvironments: {}\n")
    with pytest.raises(marvin.ConfigError) as caught:
        marvin.Project.load(config)
    error = caught.value
    assert (error.line, error.column) == (4, 13)
    assert str(error).startswith(f"{config}:4:13: ")
    assert isinstance(error, marvin.MarvinError)


def test_an_unknown_key_is_a_config_error_with_its_place_and_a_suggestion(tmp_path):
    config = tmp_path / "marvin.yml"
    config.write_text(
        "project: shop\nrepos:\n  app: {url: /srv/app.git}\nenvironments:\n  dev:\n    brnach: main\n"
    )
    with pytest.raises(marvin.ConfigError) as caught:
        marvin.Project.load(config)
    assert caught.value.line == 6
    assert caught.value.column is not None
    assert "did you mean `branch`" in str(caught.value)


def test_an_unknown_environment_is_a_config_error_naming_the_known_ones(project):
    with pytest.raises(marvin.ConfigError, match="unknown environment `stagign`.*staging"):
        project.plan("stagign")


def test_a_viewer_is_refused_a_build_with_permission_denied(demo_config, tmp_path):
    text = open(demo_config).read().replace(
        "default_role: developer", "default_role: developer\n  viewers: [py:eve]"
    )
    config = tmp_path / "marvin.yml"
    config.write_text(text)
    eve = marvin.Project.load(config, identity="eve", data_dir=tmp_path / "data")
    assert eve.role == "viewer"
    with pytest.raises(marvin.PermissionDenied, match=r"you \(py:eve\) are a viewer"):
        eve.build("dev")
    with pytest.raises(marvin.PermissionDenied):
        eve.lock("dev", "1h", "mine")
    assert eve.history("dev") == []


def test_a_build_in_an_environment_locked_by_someone_else_raises_locked(project):
    alice = project.with_identity("alice")
    bob = project.with_identity("bob")
    lock = alice.lock("staging", "1h", "testing the release")
    assert (lock.holder, lock.reason) == ("py:alice", "testing the release")
    try:
        with pytest.raises(marvin.Locked) as caught:
            bob.build("staging")
        refused = caught.value
        assert (refused.holder, refused.reason, refused.env) == ("py:alice", "testing the release", "staging")
        assert refused.until_ms == lock.until_ms
        assert str(refused).startswith("staging is locked by py:alice: testing the release, until ")
        with pytest.raises(marvin.Locked):
            bob.unlock("staging")
        assert project.status("staging").lock == lock
    finally:
        assert alice.unlock("staging") == lock
    assert alice.unlock("staging") is None
    assert bob.history("staging") == []


def test_two_build_async_calls_for_two_environments_run_concurrently(project):
    events = {"dev": [], "staging": []}
    ticks = 0

    async def ticker(stop):
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def both():
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        results = await asyncio.gather(
            project.build_async("dev", on_event=events["dev"].append),
            project.build_async("staging", on_event=events["staging"].append),
        )
        stop.set()
        await tick
        return results

    dev, staging = asyncio.run(both())
    assert (dev.ok, staging.ok) == (True, True)
    assert (dev.env, staging.env) == ("dev", "staging")
    assert ticks > 10, "the event loop kept running while the builds ran"
    for env, result in (("dev", dev), ("staging", staging)):
        assert {e["job"] for e in events[env]} == {result.job}
        assert events[env][-1]["event"] == "finished"
    jobs = {j.env: j for j in project.history("dev", 1) + project.history("staging", 1)}
    dev_job, staging_job = jobs["dev"], jobs["staging"]
    assert dev_job.started_ms < staging_job.finished_ms and staging_job.started_ms < dev_job.finished_ms, (
        "the two environments' jobs overlapped in time"
    )
    # staging built nothing: dev's images (or dev's builds in flight) were reused.
    assert len(dev.built) + len(staging.built) == 5


def test_build_reports_events_in_order(project):
    events = []
    result = project.build("dev", force=True, on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[:2] == ["queued", "started"]
    assert kinds[-1] == "finished"
    assert kinds.count("finished") == 1
    steps = [e["step"] for e in events if e["event"] == "step"]
    # Same keys after a forced rebuild: no container changes, so no deploy hooks.
    assert steps == ["fetch", "plan", "build", "deploy"]
    assert kinds.index("commits") < kinds.index("build_started") < kinds.index("built")
    assert {e["job"] for e in events} == {result.job}
    assert {e["env"] for e in events} == {"dev"}
    assert events[-1]["summary"]["job"] == result.job
    assert sorted(s for s, _ in result.built) == ["api", "db", "docs", "web", "worker"]
    assert result.text.startswith(f"✅ dev build --force #{result.job} succeeded")


def test_another_python_thread_keeps_running_while_build_blocks(project):
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.005)

    thread = threading.Thread(target=tick)
    thread.start()
    try:
        started = time.monotonic()
        # Forced, so the build takes seconds whatever ran before (a no-change
        # build can finish in 50 ms, too short to tell a blocked thread).
        result = project.build("staging", force=True)
        ended = time.monotonic()
    finally:
        stop.set()
        thread.join()
    during = [t for t in ticks if started < t < ended]
    assert result.ok
    assert len(during) >= 10, f"only {len(during)} ticks in {ended - started:.2f}s of build"


def test_status_shows_the_deployed_containers_and_the_last_job(project):
    status = project.status("dev")
    assert status.environment == "dev"
    assert {c.service for c in status.containers} == {"api", "db", "docs", "web", "worker"}
    assert all(c.state == "Running" for c in status.containers)
    assert status.lock is None
    assert status.last_job.verb == "build"
    assert status.last_job.state == "succeeded"
    assert status.to_dict()["environment"] == "dev"


def test_logs_of_the_last_job_and_of_a_service(project):
    last = project.history("dev", 1)[0]
    lines = project.logs("dev", tail=100_000)
    assert "[marvin] == fetch" in lines
    assert project.logs("dev", last.id, tail=100_000) == lines
    assert project.logs("dev", f"#{last.id}", tail=3) == lines[-3:]
    assert len(project.logs("dev")) == min(100, len(lines))
    worker = project.logs("dev", "worker")
    assert isinstance(worker, list)
    with pytest.raises(marvin.NotFound, match="service `nope` has no container in dev"):
        project.logs("dev", "nope")


def test_a_task_reports_its_exit_code(project):
    ok = project.run_task("dev", "hello", ["and", "more"])
    assert (ok.ok, ok.exit_code) == (True, 0)
    assert "[task:hello] hello from a task and more" in project.logs("dev", ok.job)
    with pytest.raises(marvin.TaskFailed) as caught:
        project.run_task("dev", "fail")
    failure = caught.value
    assert failure.exit_code == 3
    assert isinstance(failure.result, marvin.JobResult)
    assert failure.result.exit_code == 3
    assert failure.result.state == "failed"
    assert "task `fail` exited with code 3" in str(failure)
    assert "failing on purpose" in str(failure)


def task_containers(project):
    return [c for c in project.status("dev").containers if c.labels.get("io.marvin.role") == "task"]


def task_containers_after_removal(project, seconds=20):
    """The task containers left once the engine had `seconds` to finish removing them."""
    deadline = time.monotonic() + seconds
    while (left := task_containers(project)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_ctrl_c_cancels_the_running_job_cleanly(project):
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            project.run_task("dev", "nap")
    finally:
        timer.cancel()
    assert time.monotonic() - started < 30, "the 60s task was stopped, not waited for"
    job = project.history("dev", 1)[0]
    assert (job.verb, job.state) == ("run", "cancelled")
    assert task_containers_after_removal(project) == [], "the task's container was removed"


def test_rollback_redeploys_the_previous_deployment(project):
    result = project.rollback("dev")
    assert result.ok
    assert result.verb == "rollback"


def test_cancelling_the_awaiting_task_cancels_the_job(project):
    async def start_then_cancel():
        task = asyncio.create_task(project.run_task_async("dev", "nap"))
        await asyncio.sleep(2.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(start_then_cancel())
    deadline = time.monotonic() + 30
    while (job := project.history("dev", 1)[0]).state in ("queued", "running"):
        assert time.monotonic() < deadline, "the job did not stop"
        time.sleep(0.2)
    assert (job.verb, job.state) == ("run", "cancelled")
    assert task_containers_after_removal(project) == []


def test_a_viewers_cancel_is_refused_the_requesters_is_not_and_both_are_audited(
    project, demo_config, tmp_path, cli
):
    # eve is a viewer of the same project and store.
    text = open(demo_config).read().replace(
        "default_role: developer", "default_role: developer\n  viewers: [py:eve]"
    )
    config = tmp_path / "marvin.yml"
    config.write_text(text)
    eve = marvin.Project.load(config, identity="eve", data_dir=project.data_dir)
    outcome = []
    worker = threading.Thread(
        target=lambda: outcome.append(_caught(lambda: project.run_task("dev", "nap")))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while (job := project.history("dev", 1)[0]).state != "running" or job.verb != "run":
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.1)
        with pytest.raises(marvin.PermissionDenied, match=r"viewer"):
            eve.cancel("dev")
        with pytest.raises(marvin.PermissionDenied, match=r"viewer"):
            eve.cancel("dev", job.id)
        assert project.history("dev", 1)[0].state == "running", "the job goes on"
        assert project.cancel("dev", job.id) == job.id, "the requester may cancel"
    finally:
        worker.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], marvin.JobCancelled), outcome
    assert task_containers_after_removal(project) == [], "the task's container was removed"
    audit = json.loads(
        subprocess.run(
            [cli, "audit", "--json", "-n", "20", "--config", str(demo_config), "--data-dir", str(project.data_dir)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    rows = [(e["who"], e["origin"], e["command"], e["decision"]) for e in audit]
    assert ("py:tester", "python", "dev run nap", "allowed") in rows, rows
    assert ("py:eve", "python", "dev cancel", "denied") in rows, rows
    assert ("py:eve", "python", f"dev cancel #{job.id}", "denied") in rows, rows
    assert ("py:tester", "python", f"dev cancel #{job.id}", "allowed") in rows, rows


def _caught(call):
    try:
        return call()
    except marvin.MarvinError as e:
        return e
