"""discover: test-time discovery with a language model, a verifier and a PUCT archive.

Only light names live here, so that ``from discover_ttt import hookimpl`` costs
nothing. The engine's parts are in their own modules.
"""

from .hookspecs import hookimpl
from .state import State

__all__ = ["hookimpl", "State"]
