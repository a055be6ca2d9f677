#!/usr/bin/env python3
"""Checks the IAM table of docs/operations.md against the policies jobs/ ships, both ways.

Usage: iam_table.py OPERATIONS_MD JOBS_DIR

The table (the first one under `## IAM`) has one row per action and a column per policy:
`nightly` (jobs/iam-policy.json and the template's TaskRole), `maintenance`
(jobs/iam-policy-maintenance.json and MaintenanceRole), `member read role` (ReadRole of
member-read-role.yaml), `scheduler role` (SchedulerRole) and `bucket policy` (the template's
bucket policies, BucketPolicy and StateBucketPolicy, taken together).
A cell `—` means not granted; `✓` granted by both the policy file and the template's role;
`file` by the policy file only; `template` by the template's role only (a column without a
policy file takes any other text as granted). Text after the first word (`✓ (optional)`) is a
note. In a column with a policy file, a cell whose first word is `denied`, or whose note has
the word `denied`, says that the policy file or the template's role (the note says which)
denies the action in a Deny statement. For every policy: the actions it names (Allow in the
roles, Deny in the bucket policy; both branches of an Fn::If) must be exactly the rows that
say it grants them, and the actions the roles deny (the policy file's and the template's
together) exactly the rows that say `denied`. Every inline policy and bucket policy of the
templates must belong to a column. Exits non-zero naming each difference. Run by
tests/cloudformation.rs.
"""

import json
import os
import re
import sys

import yaml

COLUMNS = ["nightly", "maintenance", "member read role", "scheduler role", "bucket policy"]
# column -> (policy file or None, (template, logical ids of the resources holding its policies))
SOURCES = {
    "nightly": ("iam-policy.json", ("archive-account.yaml", ["TaskRole"])),
    "maintenance": ("iam-policy-maintenance.json", ("archive-account.yaml", ["MaintenanceRole"])),
    "member read role": (None, ("member-read-role.yaml", ["ReadRole"])),
    "scheduler role": (None, ("archive-account.yaml", ["SchedulerRole"])),
    "bucket policy": (None, ("archive-account.yaml", ["BucketPolicy", "StateBucketPolicy"])),
}
NONE = {"—", "-", ""}
DENIED = "denied"


def load_template(path):
    """A CloudFormation template with its short forms (!Ref, !If, ...) as their long forms."""

    class Loader(yaml.SafeLoader):
        pass

    def construct(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"Ref" if suffix == "Ref" else "Fn::" + suffix: value}

    Loader.add_multi_constructor("!", construct)
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


def parse_table(md):
    """{action: {column: cell}} of the first table under `## IAM`, and the problems found."""
    problems = []
    section = re.search(r"^## IAM\n(.*?)(?=^## |\Z)", md, re.S | re.M)
    if not section:
        return {}, ["docs: no `## IAM` section"]
    rows = []
    for line in section.group(1).splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break  # the first table only
    if len(rows) < 3:
        return {}, ["docs: no table in `## IAM`"]
    header = [h.lower() for h in rows[0]]
    if header[:2] != ["action", "command: code path"] or header[2:] != COLUMNS:
        problems.append(f"docs: the IAM table's columns are {header}, wanted action, command: code path, {COLUMNS}")
        return {}, problems
    table = {}
    for row in rows[2:]:
        if len(row) != len(header):
            problems.append(f"docs: a row with {len(row)} cells, not {len(header)}: {row}")
            continue
        m = re.fullmatch(r"`([a-z0-9-]+:[A-Za-z*]+)`", row[0])
        if not m:
            problems.append(f"docs: the first cell of a row is not one `service:Action`: {row[0]!r}")
            continue
        action = m.group(1)
        if action in table:
            problems.append(f"docs: {action} has two rows")
        if not row[1]:
            problems.append(f"docs: {action}: no command or code path")
        table[action] = dict(zip(COLUMNS, row[2:]))
    return table, problems


def branches(x):
    """The values of `x` with every Fn::If expanded to both branches (AWS::NoValue dropped)."""
    if isinstance(x, dict) and list(x) == ["Fn::If"]:
        _, yes, no = x["Fn::If"]
        return branches(yes) + branches(no)
    if isinstance(x, dict) and x == {"Ref": "AWS::NoValue"}:
        return []
    return [x]


def statements(doc):
    out = []
    for d in branches(doc):
        for s in branches(d.get("Statement", [])):
            for item in s if isinstance(s, list) else [s]:
                out.extend(branches(item))
    return out


def actions_of(docs, effects, where, problems):
    """{effect: the actions the statements of `docs` with that effect name}; each statement's
    effect must be one of `effects`."""
    out = {e: set() for e in effects}
    for doc in docs:
        for s in statements(doc):
            if s.get("Effect") not in effects:
                problems.append(f"{where}: statement {s.get('Sid')} is {s.get('Effect')}, not {' or '.join(effects)}")
                continue
            acts = s.get("Action", [])
            out[s["Effect"]].update(acts if isinstance(acts, list) else [acts])
    return out


def says_denied(cell):
    """The cell says the column's policies deny the action (its first word, or a word of its note)."""
    return DENIED in re.findall(r"[a-z]+", cell)


def template_policies(jobs):
    """{(template, logical id): [policy documents]} of every IAM policy in the templates."""
    out = {}
    tdir = os.path.join(jobs, "cloudformation")
    for name in sorted(os.listdir(tdir)):
        t = load_template(os.path.join(tdir, name))
        for rid, r in t.get("Resources", {}).items():
            props = r.get("Properties", {})
            docs = []
            if r["Type"] == "AWS::IAM::Role":
                docs = [p["PolicyDocument"] for p in props.get("Policies", [])]
            elif r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::S3::BucketPolicy"):
                docs = [props["PolicyDocument"]]
            if docs:
                out[(name, rid)] = docs
    return out


def main():
    md_path, jobs = sys.argv[1], sys.argv[2]
    table, problems = parse_table(open(md_path).read())
    if not table:
        problems.append("docs: the IAM table has no rows")
    policies = template_policies(jobs)
    named = {(t, rid) for _, (t, rids) in SOURCES.values() for rid in rids}
    for key in sorted(set(policies) - named):
        problems.append(f"{key[0]}: {key[1]} holds a policy, but no column of the IAM table is its")
    files = sorted(f for f in os.listdir(jobs) if f.startswith("iam-policy") and f.endswith(".json"))
    for f in sorted(set(files) - {p for p, _ in SOURCES.values() if p}):
        problems.append(f"jobs/{f}: a policy file no column of the IAM table is for")

    for column, (pfile, (tname, rids)) in SOURCES.items():
        # A role's policies allow, and may deny; a bucket policy only denies.
        effect = "Deny" if column == "bucket policy" else "Allow"
        effects = [effect] if column == "bucket policy" or not pfile else ["Allow", "Deny"]
        cells = {a: cols[column] for a, cols in table.items()}
        for a, cell in cells.items():
            word = cell.split(" ")[0] if cell else ""
            if pfile and word not in NONE | {"✓", "file", "template", DENIED}:
                problems.append(f"docs: {a}, column {column}: {cell!r} is none of —, ✓, file, template, denied")
        sources = []
        if pfile:
            path = os.path.join(jobs, pfile)
            if os.path.exists(path):
                with open(path) as f:
                    sources.append((f"jobs/{pfile}", [json.load(f)], {"✓", "file"}))
            else:
                problems.append(f"jobs/{pfile}: missing")
        docs = []
        for rid in rids:
            if (tname, rid) in policies:
                docs += policies[(tname, rid)]
            else:
                problems.append(f"{tname}: no {rid} with a policy")
        sources.append((f"{tname} {'+'.join(rids)}", docs, {"✓", "template"}))
        denied = set()
        for where, docs, says in sources:
            named = actions_of(docs, effects, where, problems)
            granted = named[effect]
            denied |= named.get("Deny", set()) if effect == "Allow" else set()
            if pfile:
                listed = {a for a, c in cells.items() if c and c.split(" ")[0] in says}
            else:
                listed = {a for a, c in cells.items() if c.split(" ")[0] not in NONE}
            for a in sorted(granted - listed):
                problems.append(f"{where} names {a}, but the IAM table's {column} column does not say so")
            for a in sorted(listed - granted):
                problems.append(f"the IAM table says {column} has {a}, but {where} does not name it")
        if pfile:
            said = {a for a, c in cells.items() if says_denied(c)}
            for a in sorted(denied - said):
                problems.append(f"{column}: a Deny statement names {a}, but the IAM table's {column} column does not say denied")
            for a in sorted(said - denied):
                problems.append(f"the IAM table says {column} denies {a}, but no Deny statement of its policies names it")

    if problems:
        for p in problems:
            print(f"iam_table: {p}", file=sys.stderr)
        sys.exit(1)
    print(f"iam_table: ok ({len(table)} actions, {len(SOURCES)} columns)")


if __name__ == "__main__":
    main()
