"""Build and deploy one environment, printing progress; exit 1 if it fails.

    python examples/python/deploy.py path/to/marvin.yml ENV [SERVICE...]
"""

import sys

import marvin


def progress(event: dict) -> None:
    kind = event["event"]
    if kind == "step":
        print(f"· {event['step']}", flush=True)
    elif kind == "built":
        print(f"  built {event['service']} ({event['millis']}ms)", flush=True)
    elif kind == "reused":
        print(f"  reused {event['service']}", flush=True)
    elif kind == "container":
        print(f"  {event['action']} {event['service']}", flush=True)


def main(config: str, env: str, *services: str) -> int:
    project = marvin.Project.load(config)
    try:
        result = project.build(env, services or None, on_event=progress)
    except marvin.JobFailed as failure:
        print(failure)
        return 1
    print(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
