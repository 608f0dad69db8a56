"""Can this process read each model directory given as an argument: every parent directory searchable, every
directory listable and searchable, every regular file openable for reading (symbolic links followed, as vLLM
follows them)? Prints one JSON object and exits 0; only reads.

The vllm role runs it with `python3 -c` under `setpriv` as the service user (tasks/validate.yml), before
anything is changed, so a model that passes the root-run checks but that the service cannot read is refused
with a fix instead of failing at start. Standard library only.
"""

import grp
import json
import os
import pwd
import stat
import sys

KEPT = 5  # unreadable entries listed per directory (all are counted)


def describe(path):
    try:
        status = os.stat(path)
    except OSError:
        return {}
    try:
        owner = pwd.getpwuid(status.st_uid).pw_name
    except KeyError:
        owner = str(status.st_uid)
    try:
        group = grp.getgrgid(status.st_gid).gr_name
    except KeyError:
        group = str(status.st_gid)
    return {"mode": stat.filemode(status.st_mode), "owner": f"{owner}:{group}"}


def check(top):
    result = {"files": 0, "dirs": 0, "count": 0, "unreadable": []}

    def refuse(path, reason):
        result["count"] += 1
        if len(result["unreadable"]) < KEPT:
            result["unreadable"].append(dict({"path": path, "reason": reason}, **describe(path)))

    parents = []
    parent = os.path.dirname(top)
    while parent and parent != os.path.dirname(parent):
        parents.insert(0, parent)
        parent = os.path.dirname(parent)
    for directory in ["/"] + parents:
        if not os.access(directory, os.X_OK):
            refuse(directory, "not searchable")
            return result
    seen = set()
    pending = [top]
    while pending:
        path = pending.pop()
        try:
            status = os.stat(path)
        except FileNotFoundError:
            continue  # a dangling link is not a permission problem
        except PermissionError:
            refuse(path, "not readable")
            continue
        if stat.S_ISDIR(status.st_mode):
            if (status.st_dev, status.st_ino) in seen:
                continue
            seen.add((status.st_dev, status.st_ino))
            if not os.access(path, os.R_OK | os.X_OK):
                refuse(path, "directory not listable and searchable")
                continue
            try:
                names = sorted(os.listdir(path), reverse=True)
            except OSError:
                refuse(path, "directory not listable")
                continue
            result["dirs"] += 1
            pending.extend(os.path.join(path, name) for name in names)
        elif stat.S_ISREG(status.st_mode):
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)))
                result["files"] += 1
            except PermissionError:
                refuse(path, "not readable")
            except OSError:
                pass
    return result


def main(paths):
    report = {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
              "models": {path: check(os.path.normpath(path)) for path in paths}}
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
