"""Run a task from marvin.yml in an environment; exit with the task's code.

    python examples/python/task.py path/to/marvin.yml ENV TASK [ARG...]
"""

import sys

import marvin


def show_output(event: dict) -> None:
    if event["event"] == "log" and event["stream"].startswith("task:"):
        print(f"  | {event['line']}", flush=True)


def main(config: str, env: str, task: str, *args: str) -> int:
    project = marvin.Project.load(config)
    try:
        result = project.run_task(env, task, list(args), on_event=show_output)
    except marvin.TaskFailed as failure:
        print(failure)
        return failure.exit_code if failure.exit_code is not None else 1
    print(result.text)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
