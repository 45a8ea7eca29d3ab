"""Count the fault (bad-input and failure) test cases of the repository by category.

Collects the tests with pytest (nothing runs), keeps the cases that exercise a fault
(the fault suites tests/test_faults.py, tests/core/test_faults_api.py,
tests/napari/test_faults_reader.py, tests/test_signals.py, and elsewhere every case whose
name or parameters name a fault), and sorts each case into one interface (CLI, Python
API, napari) and one fault category, the first whose words it contains.

    python scripts/count_faults.py            # the table
    python scripts/count_faults.py --min 362  # exit 1 when fewer cases
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SUITES = ("test_faults.py", "test_faults_api.py", "test_faults_reader.py", "test_signals.py")

#: (category, pattern) in order of precedence; a case goes to the first that matches
CATEGORIES = [
    (
        "SIGINT / SIGKILL / closing mid-run",
        r"sigint|sigkill|interrupt|killed|signal|closing|abort",
    ),
    ("read-only / full disk", r"read.only|full|disk|unwritable|permission|space"),
    ("NaN / Inf", r"nan|inf\b|inf-|infinite|finite"),
    ("model files", r"model|checkpoint|safetensors|pickle|weights|resume"),
    ("settings of the wrong type or value", r"config|setting|iterations|learning|device|patch"),
    ("annotation oddities", r"annotat|label|stray|negative|background|class|fraction|mask"),
    ("wrong dimensions or geometry", r"dimension|shape|axes|geometry|spacing|channel|2d|3d"),
    ("outputs (overwrite, output = input)", r"overwrite|exist|out-is|output|extension"),
    (
        "corrupt / truncated / empty / missing files",
        r"corrupt|truncat|empty|bytes|garbage|damag|missing|text|folder|header|unreadable"
        r"|not.handled|broken|bad|refus|error|invalid|wrong|odd|reject",
    ),
]
#: outside the fault suites, a case counts when its name says it tests a fault
FAULT_WORDS = re.compile(
    r"refus|reject|bad|corrupt|truncat|empty|damag|missing|invalid|wrong|error|nan\b|nan_|"
    r"nan-|inf\b|infinite|finite|negative|stray|odd|overwrite|exists|read_only|read-only|"
    r"full_disk|unwritable|interrupt|sigint|sigkill|kill|recover|autosave|fallback|"
    r"malicious|evil|pickle|closing|abort|unknown|mismatch|fails|failed|broken|not_handled",
    re.IGNORECASE,
)


def interface(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    if "/napari/" in path:
        return "napari"
    if re.search(r"tests/test_(cli|faults|signals)", path):
        return "CLI"
    return "Python API"


#: words that name where a fault is fed in (a command's role), not the fault
ROLES = re.compile(
    r"(train|predict|sparsify|evaluate)-(labels|image|pred)|read_(labels|volume|channels)"
)


def category(nodeid: str) -> str:
    name = ROLES.sub("", nodeid.split("::", 1)[1].lower())
    for cat, pattern in CATEGORIES:
        if re.search(pattern, name):
            return cat
    return "recovery (autosave, NaN recovery)"


def collect(paths: list[str]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return [line for line in proc.stdout.splitlines() if "::" in line]


def fault_cases(nodeids: list[str]) -> list[str]:
    out = []
    for n in nodeids:
        in_suite = n.split("::")[0].endswith(SUITES)
        if in_suite or FAULT_WORDS.search(n.split("::", 1)[1]):
            out.append(n)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["tests"])
    parser.add_argument("--min", type=int, default=0, help="fail below this many cases")
    args = parser.parse_args(argv)
    cases = fault_cases(collect(args.paths))
    by_cat = Counter(category(n) for n in cases)
    by_if = Counter(interface(n) for n in cases)
    suites = sum(n.split("::")[0].endswith(SUITES) for n in cases)
    width = max(len(c) for c in by_cat) + 2
    print("fault cases by category")
    for cat, n in by_cat.most_common():
        print(f"  {cat:<{width}}{n:>5}")
    print("fault cases by interface")
    for name, n in by_if.most_common():
        print(f"  {name:<{width}}{n:>5}")
    print(f"  {'in the fault suites':<{width}}{suites:>5}")
    print(f"  {'total':<{width}}{len(cases):>5}")
    return 0 if len(cases) >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
