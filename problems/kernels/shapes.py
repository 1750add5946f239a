"""The cases each tier checks and times.

A case is a dict of ``generate_input``'s arguments: seqlen N, bs B, dim C,
hiddendim H, seed, nomask, distribution.

- ``spec``: the 18 test and 7 benchmark cases of the GPU MODE TriMul task
  (H = 128), timed on a GPU.
- ``cpu``: the same cases shrunk for a CPU core: N / 8 (at least 4), C / 4,
  H = 32. The largest benchmark (N = 128, C = 96) takes tens of milliseconds
  in the reference implementation on one core.
- ``tiny``: 4 test and 2 benchmark cases of N ≤ 16, for tests and quick demos.
"""

from __future__ import annotations

# (N, B, C, seed, nomask, distribution); H = 128
_SPEC_TESTS = [
    (32, 1, 128, 9371, True, "normal"),
    (32, 1, 128, 1092, False, "normal"),
    (64, 2, 256, 2291, True, "normal"),
    (64, 2, 256, 210284, False, "normal"),
    (128, 1, 768, 81934, True, "normal"),
    (256, 1, 128, 1932, True, "normal"),
    (256, 1, 128, 10432, False, "normal"),
    (768, 2, 128, 731, True, "normal"),
    (1024, 1, 384, 53121, False, "normal"),
    (1024, 1, 768, 31, True, "normal"),
    (1024, 1, 768, 4921, False, "normal"),
    (32, 1, 128, 937321, True, "cauchy"),
    (64, 2, 256, 2291, True, "cauchy"),
    (128, 1, 768, 8134, True, "cauchy"),
    (256, 1, 128, 932, True, "cauchy"),
    (768, 2, 128, 31, True, "cauchy"),
    (1024, 1, 384, 5321, False, "cauchy"),
    (1024, 1, 768, 491, False, "cauchy"),
]
_SPEC_BENCHMARKS = [
    (256, 2, 128, 9371, True, "normal"),
    (768, 1, 128, 381, True, "cauchy"),
    (256, 2, 384, 2301, False, "normal"),
    (512, 1, 128, 12819, True, "normal"),
    (1024, 1, 128, 381, True, "cauchy"),
    (768, 1, 384, 481, False, "normal"),
    (1024, 1, 384, 23291, True, "normal"),
]
_TINY_TESTS = [
    (8, 1, 16, 9371, True, "normal"),
    (8, 2, 32, 1092, False, "normal"),
    (16, 1, 16, 937321, True, "cauchy"),
    (12, 1, 32, 5321, False, "cauchy"),
]
_TINY_BENCHMARKS = [
    (16, 1, 32, 9371, True, "normal"),
    (16, 2, 16, 2301, False, "cauchy"),
]


def _cases(rows, hidden, scale_n=1, scale_c=1):
    return [
        {
            "seqlen": max(4, n // scale_n),
            "bs": b,
            "dim": c // scale_c,
            "hiddendim": hidden,
            "seed": seed,
            "nomask": nomask,
            "distribution": dist,
        }
        for n, b, c, seed, nomask, dist in rows
    ]


SHAPES = {
    "spec": (_cases(_SPEC_TESTS, 128), _cases(_SPEC_BENCHMARKS, 128)),
    "cpu": (_cases(_SPEC_TESTS, 32, 8, 4), _cases(_SPEC_BENCHMARKS, 32, 8, 4)),
    "tiny": (_cases(_TINY_TESTS, 16), _cases(_TINY_BENCHMARKS, 16)),
}


def describe(case: dict) -> str:
    """``N=32 B=2 C=96 H=32 normal masked``: one case, for tables and messages."""
    mask = "unmasked" if case["nomask"] else "masked"
    return f"N={case['seqlen']} B={case['bs']} C={case['dim']} H={case['hiddendim']} {case['distribution']} {mask}"
