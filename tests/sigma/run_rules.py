"""Runs converted Sigma queries over Custos's JSON events.

Usage: run_rules.py EVENTS.json QUERIES.json
QUERIES.json maps each rule's file name to its SQL. The events are loaded flat into the table
`events`: a field is its dotted path, a list of strings its items joined by single spaces.
Prints, per rule, the matching events' `seq` numbers as JSON.
"""
import json
import sqlite3
import sys


def flatten(value, prefix, out):
    if isinstance(value, dict):
        for key, item in value.items():
            flatten(item, f"{prefix}{key}.", out)
    elif isinstance(value, list):
        if all(isinstance(item, str) for item in value):
            out[prefix[:-1]] = " ".join(value)
        else:
            for index, item in enumerate(value):
                flatten(item, f"{prefix}{index}.", out)
    else:
        out[prefix[:-1]] = value


def load(path):
    rows = []
    for line in open(path, encoding="utf-8"):
        if line.strip():
            row = {}
            flatten(json.loads(line), "", row)
            rows.append(row)
    columns = sorted({column for row in rows for column in row})
    db = sqlite3.connect(":memory:")
    quoted = ", ".join(f'"{c}"' for c in columns)
    db.execute(f"CREATE TABLE events ({quoted})")
    marks = ", ".join("?" for _ in columns)
    db.executemany(
        f"INSERT INTO events ({quoted}) VALUES ({marks})",
        [[row.get(c) for c in columns] for row in rows],
    )
    return db, columns


def main():
    db, columns = load(sys.argv[1])
    queries = json.load(open(sys.argv[2], encoding="utf-8"))
    results = {}
    for rule, query in queries.items():
        cursor = db.execute(query)
        names = [d[0] for d in cursor.description]
        results[rule] = [str(dict(zip(names, row))["seq"]) for row in cursor.fetchall()]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
