"""Deploy several environments in order, stopping at the first that fails.

    python examples/python/rollout.py path/to/marvin.yml ENV...
"""

import sys

import marvin


def main(config: str, *envs: str) -> int:
    project = marvin.Project.load(config)
    for i, env in enumerate(envs):
        print(f"== {env} ({i + 1} of {len(envs)})", flush=True)
        try:
            result = project.build(env)
        except marvin.MarvinError as failure:
            print(failure)
            rest = envs[i + 1:]
            if rest:
                print(f"rollout stopped at {env}; not deployed: {', '.join(rest)}")
            return 1
        print(result.text)
    print(f"rollout done: {' → '.join(envs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
