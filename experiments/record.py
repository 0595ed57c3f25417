"""
The files an experiment keeps in its results folder, written so that a call killed at any moment
leaves each file whole: compare.py (the language-modelling runs) and tasks.py (the known-answer tasks)
both keep their record with these.
"""

import csv
import json
import os


def read_csv(path):
    """The rows of a CSV file as dicts; [] when there is no file."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path, columns, rows):
    """rows (dicts; floats with 6 decimals) under the header `columns`, through a temporary file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, columns, restval="")
        writer.writeheader()
        writer.writerows({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    os.replace(path + ".tmp", path)


def write_atomic(path, text):
    """Write to a temporary file, then rename it over path: the old file stays whole until then."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def check_shared(path, shared, error, write=True):
    """path (a results folder's experiment.json) holds the settings every call into that folder shares.
    The first call writes them (when `write`); a later call whose settings differ raises error(message),
    before unlike runs could meet in one table."""
    shared = json.loads(json.dumps(shared))  # as it reads back: tuples become lists
    if not os.path.exists(path):
        if write:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            write_atomic(path, json.dumps(shared, indent=1, sort_keys=True) + "\n")
        return
    old = json.load(open(path))
    for k in sorted(set(old) | set(shared)):
        if old.get(k) != shared.get(k):
            raise error(f"{path} has {k}={old.get(k)!r} but this call has {k}={shared.get(k)!r}: run with the same "
                        "settings, or give another --results_dir")
