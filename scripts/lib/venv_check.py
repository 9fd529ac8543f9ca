"""Checks that a venv holds exactly the packages a lock file pins.

    python3 venv_check.py LOCK VENV_DIR

LOCK is a pip-compile output (`name==version \\` lines followed by `--hash`
lines). The venv's packages are read with its own pip (`pip list`), leaving
out pip and setuptools, which `python3 -m venv` puts there itself. Prints
every package that is missing, extra, or at another version, and exits 1 if
there is any; prints nothing and exits 0 when the two agree.
"""

import json
import re
import subprocess
import sys

BOOTSTRAP = {"pip", "setuptools"}


def normalize(name):
    # PEP 503: runs of -, _ and . are one -, case does not matter.
    return re.sub(r"[-_.]+", "-", name).lower()


def locked(path):
    pins = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
            if m:
                pins[normalize(m.group(1))] = m.group(2)
    return pins


def installed(venv):
    out = subprocess.run(
        [f"{venv}/bin/python", "-m", "pip", "list", "--format=json",
         "--disable-pip-version-check"],
        check=True, capture_output=True, text=True,
    ).stdout
    return {
        normalize(p["name"]): p["version"]
        for p in json.loads(out)
        if normalize(p["name"]) not in BOOTSTRAP
    }


def main():
    lock, venv = sys.argv[1], sys.argv[2]
    want, have = locked(lock), installed(venv)
    if not want:
        print(f"{lock}: no `name==version` line found", file=sys.stderr)
        return 1
    problems = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            problems.append(f"missing: {name}=={want[name]}")
        elif name not in want:
            problems.append(f"not in the lock: {name}=={have[name]}")
        elif want[name] != have[name]:
            problems.append(f"{name}: {have[name]} installed, {want[name]} locked")
    for p in problems:
        print(f"{venv}: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
