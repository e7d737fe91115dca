"""List the mutants of one module as JSON, using mutmut 2's mutation engine (run by .venv-mutmut's Python).

    .venv-mutmut/bin/python scripts/mutation/mutants.py MODULE [--strings] > mutants.json

One object per mutant: line (1-based), original and mutated text of that line, and the whole mutated
source. Only the engine is used (its parso-based operators); running the tests is run.py's job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import mutmut

# mutmut's node kinds: operators, comparisons and keywords (is/in/not/True/False/None), numbers, arguments,
# and/or, lambdas, assignments (value -> None), decorators; string literals only with --strings (most are
# column names, SQL and messages: mutating them measures little but typing).
KINDS = {"operator", "keyword", "number", "name", "argument", "or_test", "and_test", "lambdef", "expr_stmt",
         "decorator", "annassign"}
STRINGS = {"string", "fstring"}


def mutants(path: str, strings: bool = False) -> list[dict]:
    source = Path(path).read_text()
    config = SimpleNamespace(mutation_types_to_apply=KINDS | (STRINGS if strings else set()),
                             covered_lines_by_filename=None)
    ids = mutmut.list_mutations(mutmut.Context(source=source, filename=path, config=config))
    lines = source.split("\n")
    out = []
    for mid in ids:
        context = mutmut.Context(source=source, filename=path, mutation_id=mid, config=config)
        mutated, count = mutmut.mutate(context)
        if count != 1:
            raise RuntimeError(f"{path}:{mid.line_number + 1}: {count} mutations for one id")
        new_lines = mutated.split("\n")
        # the mutated line; a mutation that removes or adds a line (rare) shows the first differing line
        n = next((i for i, (a, b) in enumerate(zip(lines, new_lines, strict=False)) if a != b), mid.line_number)
        out.append({"line": n + 1, "original": lines[n].strip(),
                    "mutated": new_lines[n].strip() if n < len(new_lines) else "", "source": mutated})
    return out


if __name__ == "__main__":
    json.dump(mutants(sys.argv[1], "--strings" in sys.argv[2:]), sys.stdout)
