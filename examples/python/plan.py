"""Print what `build` would do in an environment; touches nothing.

    python examples/python/plan.py path/to/marvin.yml ENV
"""

import sys

import marvin


def main(config: str, env: str) -> int:
    plan = marvin.Project.load(config).plan(env)
    print(plan.text, end="")
    to_build = [b.service for b in plan.builds if b.action == "build"]
    print(f"would build: {', '.join(to_build) or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
