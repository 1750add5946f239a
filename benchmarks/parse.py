"""Host-side cost of one hostile reply: code-block extraction and parsing.

    .venv/bin/python benchmarks/parse.py

Prints the CPU time of ``last_code_block`` against the backtracking pattern it
replaced, on one line of N fence markers, and of ``Problem.parse`` on the
pathological programs a model can write (long chains, deep nesting, huge files).
"""

import re
import time

from discover_ttt.parsing import last_code_block
from discover_ttt.problem import Problem

# the pattern the fence scan replaced: it backtracks on a line of unclosed fences
OLD_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def cpu(fn, *args):
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def main():
    print(f"{'fence markers on one line':>26} | {'regex (s)':>10} | {'scan (s)':>10}")
    for n in (1_000, 2_000, 4_000, 200_000):
        flood = "```python " * n
        old = f"{cpu(OLD_FENCE.findall, flood):10.3f}" if n <= 4_000 else f"{'(minutes)':>10}"
        print(f"{n:>26} | {old} | {cpu(last_code_block, flood):10.4f}")
    p = Problem()
    cases = {
        "45k-term + chain": "x = " + "+".join(["1"] * 45_000),
        "45k attribute chain": "x = a" + ".b" * 45_000,
        "20k nested parens": "x = " + "(" * 20_000 + ")" * 20_000,
        "90k unary minus": "x = " + "-" * 90_000 + "1",
        "program over the cap": "#" * (p.max_code_chars + 1),
    }
    print(f"\n{'reply':>26} | {'parse (s)':>10} | outcome")
    for name, code in cases.items():
        reply = f"```python\n{code}\n```"
        t0 = time.process_time()
        out = p.parse(reply)
        print(f"{name:>26} | {time.process_time() - t0:10.3f} | {out.kind}: {out.reason[:60]}")


if __name__ == "__main__":
    main()
