#!/usr/bin/env python3
"""Map the normative statements of MQTT 5.0 and 3.1.1 to the tests that cover them.

Reads e2e/conformance/statements.tsv (the statement catalogue), finds statement citations in
the test sources and writes docs/conformance.md. `--check` writes nothing and exits 1 when
docs/conformance.md differs from what would be written (for CI).

Where citations are read:
  * Python: every `test_*` function (top level or in a `Test*` class) of
    e2e/conformance/**/test_*.py and e2e/edge/**/test_*.py - its docstring, comments and body. Test id: pytest node id,
    e.g. `e2e/conformance/test_connect_raw.py::test_connect_second_connect_is_protocol_error`.
  * Rust: every `#[test]` / `#[tokio::test]` function in broker/src/**/*.rs (the `#[cfg(test)]`
    modules and tests*.rs files) and broker/tests/**/*.rs - the comment lines just above it,
    its attributes and its body. Test id: `broker/tests/x.rs::name`.
  Python decorators are not read (parametrize ids such as "v5" are not markers).
  Citations anywhere else (helpers, non-test code) cover nothing.

Citation convention:
  * `[MQTT-x.y.z-n]` cites a statement. The standards' misprints `[MQTT-4.2-1]`,
    `[MQTT-3.1.2.7]` and `[MQTT-3-8.3-4]` are read as MQTT-4.2.0-1, -3.1.2-7 and -3.8.3-4.
  * A test function name cites too: `mqtt_x_y_z_n` in it reads as [MQTT-x.y.z-n] and `3_1_1`
    as the marker 3.1.1, so `mqtt_3_1_2_11_and_3_1_1_mqtt_3_1_2_13_...` cites 5.0's
    MQTT-3.1.2-11 and 3.1.1's MQTT-3.1.2-13 (markers in the name do not reach the body).
  * Version: a marker `v5`, `v5.0`, `5.0`, `MQTT 5` (-> 5.0) or `v3.1.1`, `3.1.1`, `v311`,
    `v3.1`, `MQTT 3.1.1` (-> 3.1.1; MQTT 3.1 has no numbered statements) applies to the ids
    that follow it in the same block, up to the next marker (blocks: a Python docstring, the
    rest of the function; a Rust test's comments and attributes, its body). Markers joined
    only by spaces, commas, "/", "&", "+", "and" or "or" add up: "v5 and v3.1.1: [MQTT-3.6.1-1]"
    cites both versions (each version that has the id, when several are marked).
    A marker inside the brackets applies to that id alone: `[MQTT-4.8.0-1 v3.1.1]`.
  * An id with no marker belongs to the test's default version: 3.1.1 when the test name
    contains `v311`, `v3_1_1` or `v31`, else 5.0. If the id exists only in the other
    version it is credited there.
  * Citations that match no statement are listed at the end of the report.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = "e2e/conformance/statements.tsv"
REPORT = "docs/conformance.md"
PY_GLOBS = ["e2e/conformance/**/test_*.py", "e2e/edge/**/test_*.py"]
RUST_GLOBS = ["broker/src/**/*.rs", "broker/tests/**/*.rs"]
VERSIONS = ("5.0", "3.1.1")
APPLIES = ("server", "both", "client", "na")

ID = r"MQTT-\d+(?:[.-]\d+){2,3}"
TOKEN = re.compile(
    rf"\[(?P<id>{ID})(?P<qual>[^\]\[]*)\]"
    r"|(?<![\w.-])(?P<v5>v5(?:\.0)?|5\.0|MQTT ?5(?:\.0)?)(?![\w]|\.\d)"
    r"|(?<![\w.-])(?P<v3>v3\.1\.1|3\.1\.1|v311|v3\.1|v31|MQTT ?3\.1\.1)(?![\w]|\.\d)"
)
JOIN = re.compile(r"[\s,/&+]*(?:and|or)?[\s,/&+]*")  # what may stand between markers that add up
NAME_ID = re.compile(r"(?<![^_])mqtt_(\d+)_(\d+)_(\d+)_(\d+)(?![^_])")
V311_NAME = re.compile(r"(?:^|_)(?:v311|v3_1_1|v31)(?:_|$)")
RUST_TEST_ATTR = re.compile(r"^\s*#\[(?:[\w:]+::)?test\b")
RUST_FN = re.compile(r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)")


def canonical(raw: str) -> str:
    """Normalise a cited id (including the standards' misprints) to MQTT-a.b.c-n."""
    nums = re.findall(r"\d+", raw)
    if len(nums) == 3:  # MQTT-4.2-1
        nums = [nums[0], nums[1], "0", nums[2]]
    return f"MQTT-{'.'.join(nums[:3])}-{nums[3]}"


def sort_key(sid: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", sid))


def read_catalogue(path: Path) -> dict:
    """Return {version: {id: row}} from the TSV, checking every row."""
    statements = {v: {} for v in VERSIONS}
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    header = lines[0].split("\t")
    for n, line in enumerate(lines[1:], 2):
        row = dict(zip(header, line.split("\t")))
        row.setdefault("na_reason", "")
        problem = None
        if row.get("version") not in VERSIONS:
            problem = "unknown version"
        elif row.get("applies") not in APPLIES:
            problem = "applies must be one of " + ", ".join(APPLIES)
        elif (row["applies"] in ("client", "na")) != bool(row["na_reason"].strip()):
            problem = "na_reason is required for client/na rows and only for them"
        elif row["id"] in statements[row["version"]]:
            problem = "duplicate id"
        if problem:
            sys.exit(f"{path}: data row {n}: {problem}: {line!r}")
        statements[row["version"]][row["id"]] = row
    return statements


def name_as_text(name: str) -> str:
    """Spell a test name as citation text: mqtt_3_8_3_5_x -> [MQTT-3.8.3-5], 3_1_1 -> 3.1.1."""
    text = NAME_ID.sub(lambda m: f" [MQTT-{m[1]}.{m[2]}.{m[3]}-{m[4]}] ", name)
    return re.sub(r"(?<![\d.])3_1_1(?![\d])", " 3.1.1 ", text).replace("_", " ")


def marked_ids(text: str) -> list:
    """Return [(id, {versions} or None when unmarked)] in the order the text cites them."""
    out, current, marker_end = [], set(), None
    for tok in TOKEN.finditer(text):
        if tok["id"]:
            inner = [t for t in TOKEN.finditer(tok["qual"]) if not t["id"]]
            qual = {"5.0" if t["v5"] else "3.1.1" for t in inner}
            out.append((canonical(tok["id"]), qual or (set(current) or None)))
            marker_end = None
        else:
            version = "5.0" if tok["v5"] else "3.1.1"
            joined = marker_end is not None and JOIN.fullmatch(text[marker_end:tok.start()])
            current = current | {version} if joined else {version}
            marker_end = tok.end()
    return out


def citations(blocks: list, name: str, statements: dict) -> tuple:
    """Return ({(version, id)}, [unknown citations]) cited by a test's name and text blocks."""
    default = "3.1.1" if V311_NAME.search(name) else "5.0"
    other = "3.1.1" if default == "5.0" else "5.0"
    found, unknown = set(), []
    for sid, versions in [c for block in [name_as_text(name)] + blocks for c in marked_ids(block)]:
        if versions is None:
            only_other = sid not in statements[default] and sid in statements[other]
            versions = {other} if only_other else {default}
        known = {v for v in versions if sid in statements[v]}
        if len(versions) > 1 and known:  # "v5 and v3.1.1": credit the versions that have it
            versions = known
        for v in sorted(versions):
            if v in known:
                found.add((v, sid))
            else:
                unknown.append(f"{sid} ({v})")
    return found, unknown


def python_tests(path: Path):
    """Yield (test id, name, [docstring, rest]) for each pytest test function in one file."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    rel = path.relative_to(REPO).as_posix()

    def chunk(node):  # from the def line on: decorators (parametrize ids) are not citations
        body = lines[node.lineno - 1:node.end_lineno]
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                and isinstance(first.value.value, str):
            a, b = first.lineno - node.lineno, first.end_lineno - node.lineno + 1
            return [first.value.value, "\n".join(body[:a] + body[b:])]
        return ["\n".join(body)]

    for node in ast.parse(source, filename=rel).body:
        funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
        if isinstance(node, funcs) and node.name.startswith("test"):
            yield f"{rel}::{node.name}", node.name, chunk(node)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, funcs) and item.name.startswith("test"):
                    yield f"{rel}::{node.name}::{item.name}", item.name, chunk(item)


def rust_tests(path: Path):
    """Yield (test id, name, [comments and attributes, signature and body]) per #[test] fn."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(REPO).as_posix()
    for i, line in enumerate(lines):
        if not RUST_TEST_ATTR.match(line):
            continue
        j = i
        while j < len(lines) and not RUST_FN.match(lines[j]):
            j += 1
        if j == len(lines):
            break
        indent, name = RUST_FN.match(lines[j]).groups()
        start = i
        while start > 0 and lines[start - 1].lstrip().startswith(("//", "#[")):
            start -= 1
        end = j
        one_line = lines[j].count("{") == lines[j].count("}") > 0
        while not one_line and end + 1 < len(lines) and lines[end].rstrip() != f"{indent}}}":
            end += 1
        yield f"{rel}::{name}", name, ["\n".join(lines[start:j]), "\n".join(lines[j:end + 1])]


def scan(statements: dict) -> tuple:
    """Return ({(version, id): set(test ids)}, {test id: [unknown citations]})."""
    covered, unknown = defaultdict(set), {}
    sources = [(p, python_tests) for g in PY_GLOBS for p in REPO.glob(g)]
    sources += [(p, rust_tests) for g in RUST_GLOBS for p in REPO.glob(g)]
    for path, reader in sorted(sources, key=lambda source: source[0]):
        for test_id, name, blocks in reader(path):
            found, bad = citations(blocks, name, statements)
            for key in found:
                covered[key].add(test_id)
            if bad:
                unknown[test_id] = sorted(set(bad))
    return covered, unknown


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(statements: dict, covered: dict, unknown: dict) -> str:
    """Return the whole of docs/conformance.md."""
    out = [
        "# MQTT conformance: statements and the tests that cover them",
        "",
        "<!-- Generated by scripts/conformance.py from e2e/conformance/statements.tsv and the test",
        "     sources. Do not edit by hand: run `python3 scripts/conformance.py`. -->",
        "",
        "Every numbered normative statement (`[MQTT-x.y.z-n]`) of MQTT 5.0 (OASIS Standard,",
        "March 2019) and MQTT 3.1.1 (OASIS Standard, October 2014) is listed here with the tests",
        "that cite it, or with the reason it does not apply to a server. The summaries are ours",
        "and only help find a statement; the standards are the reference.",
        "",
        "**How to read it.** *Status* is `covered` (at least one test cites the statement),",
        "`not covered` (it binds the server and no test cites it yet) or `n/a` with the reason",
        "(client-only behaviour, or not applicable to Tern). Statements that bind both sides count",
        "as server statements. Tests are pytest node ids under `e2e/conformance/` or",
        "`file::function` for Rust tests.",
        "",
        "**Citing a statement in a test.** Write the id in brackets in the test's docstring, doc",
        "comment, comments or body: `[MQTT-3.1.2-24]`. A version marker (`v5`, `5.0`, `v3.1.1`,",
        "`3.1.1`, `v311`) before the ids applies to the ids that follow it, up to the next marker",
        "or the end of the block (a docstring or doc comment is one block, the function body",
        "another). Markers joined only by `and`, `or`, `,` or `/` add up (`v5 and v3.1.1:",
        "[MQTT-3.6.1-1]`), and a marker inside the brackets applies to that id alone",
        "(`[MQTT-4.8.0-1 v3.1.1]`). Unmarked ids belong to MQTT 5.0, or to 3.1.1 when the test's",
        "name contains `v311`, `v3_1_1` or `v31`; an unmarked id that exists only in the other",
        "version is credited there. A test named `mqtt_3_8_3_5_...` cites MQTT-3.8.3-5, and",
        "`3_1_1` in a name is a marker: `mqtt_3_1_1_mqtt_3_8_3_4_...` cites 3.1.1's MQTT-3.8.3-4.",
        "Citations outside test functions (helpers, production code) cover nothing.",
        "",
        "**Regenerating.** `python3 scripts/conformance.py` rewrites this file;",
        "`python3 scripts/conformance.py --check` fails when it is out of date. The catalogue is",
        "`e2e/conformance/statements.tsv`.",
        "",
        "## Summary",
        "",
        "| Version | Statements | Server statements | Covered | Not covered | Not applicable |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    missing = {}
    for v in VERSIONS:
        rows = statements[v].values()
        server = [r for r in rows if r["applies"] in ("server", "both")]
        uncovered = (r["id"] for r in server if not covered.get((v, r["id"])))
        missing[v] = sorted(uncovered, key=sort_key)
        out.append(f"| MQTT {v} | {len(rows)} | {len(server)} | {len(server) - len(missing[v])} "
                   f"| {len(missing[v])} | {len(rows) - len(server)} |")
    for v in VERSIONS:
        out += ["", f"## MQTT {v}", "", "| Statement | Summary | Status | Tests |",
                "| --- | --- | --- | --- |"]
        for sid in sorted(statements[v], key=sort_key):
            row, tests = statements[v][sid], sorted(covered.get((v, sid), ()))
            if row["applies"] in ("client", "na"):
                status = f"n/a ({row['applies']}): {row['na_reason']}"
            else:
                status = "covered" if tests else "**not covered**"
            links = "<br>".join(f"`{t}`" for t in tests)
            out.append(f"| {sid} | {cell(row['summary'])} | {cell(status)} | {links} |")
    out += ["", "## Not yet covered", "", "Server statements that no test cites yet."]
    for v in VERSIONS:
        out += ["", f"### MQTT {v} ({len(missing[v])})", ""]
        out += [f"- {sid}: {statements[v][sid]['summary']}" for sid in missing[v]] or ["None."]
    if unknown:
        out += ["", "## Citations that match no statement", "",
                "Fix the id or its version marker in these tests.", ""]
        out += [f"- `{t}`: {', '.join(ids)}" for t, ids in sorted(unknown.items())]
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if {REPORT} is not what would be generated; write nothing")
    args = parser.parse_args()
    statements = read_catalogue(REPO / CATALOGUE)
    covered, unknown = scan(statements)
    text = render(statements, covered, unknown)
    target = REPO / REPORT
    if args.check:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            print(f"{REPORT} is out of date: run python3 scripts/conformance.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    for test_id, ids in sorted(unknown.items()):
        print(f"warning: {test_id}: no such statement: {', '.join(ids)}", file=sys.stderr)
    print(f"wrote {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
