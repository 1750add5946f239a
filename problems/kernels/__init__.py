"""TriMul (AlphaFold3's outgoing triangle multiplicative update): the GPU-kernel problem, with a CPU tier."""

from .problem import TriMulProblem

__all__ = ["TriMulProblem"]
