"""The Python examples in examples/python, each run as a script against the real engine."""

import http.server
import json
import subprocess
import threading

import pytest

from conftest import REPO, python

EXAMPLES = REPO / "examples" / "python"


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python(), str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=600
    )


def test_plan_example_prints_a_plan_and_touches_nothing(demo_config, project):
    done = run("plan.py", demo_config, "dev")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Plan for dev ({project.name})")
    assert "would build: api, db, docs, web, worker" in done.stdout
    assert project.status("dev").containers == []


def test_deploy_example_deploys_with_progress(demo_config, project):
    done = run("deploy.py", demo_config, "dev")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "· build\n" in done.stdout
    assert "  built api" in done.stdout
    assert "✅ dev build" in done.stdout
    assert len(project.status("dev").containers) == 5


def test_task_example_exits_with_the_task_code(demo_config):
    done = run("task.py", demo_config, "dev", "hello", "from", "python")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  | hello from a task from python" in done.stdout
    failed = run("task.py", demo_config, "dev", "fail")
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "task `fail` exited with code 3" in failed.stdout


def test_rollout_example_stops_at_the_first_failure(demo_config, project):
    done = run("rollout.py", demo_config, "dev", "stagign", "staging")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "unknown environment `stagign`" in done.stdout
    assert "rollout stopped at stagign; not deployed: staging" in done.stdout
    assert project.status("staging").containers == []


class Webhook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        Webhook.received.append((self.path, json.loads(self.rfile.read(length))))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = http.server.HTTPServer(("127.0.0.1", 0), Webhook)
    Webhook.received = []
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/marvin"
    server.shutdown()
    thread.join()
    server.server_close()


def test_webhook_example_posts_the_build_report(demo_config, webhook):
    done = run("webhook_report.py", demo_config, "dev", webhook)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(Webhook.received) == 1
    path, body = Webhook.received[0]
    assert path == "/hooks/marvin"
    assert body["text"].startswith("✅ dev build #")
    assert "unchanged 5" in body["text"]
