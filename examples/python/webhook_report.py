"""Build an environment and post the report to an incoming webhook (Slack-style `{"text": ...}`).

    python examples/python/webhook_report.py path/to/marvin.yml ENV WEBHOOK_URL

The report is posted whether the build succeeds or fails; the exit code says which.
"""

import json
import sys
import urllib.request

import marvin


def post(url: str, text: str) -> None:
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def main(config: str, env: str, url: str) -> int:
    project = marvin.Project.load(config)
    try:
        result = project.build(env)
        text, code = result.text, 0
    except marvin.JobFailed as failure:
        text, code = str(failure), 1
    post(url, text)
    print(f"posted the report of {env} to the webhook")
    return code


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
