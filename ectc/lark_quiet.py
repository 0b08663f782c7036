"""lark, imported without the optional third-party `regex` module.

lark imports `regex` whenever it is installed (transformers brings it along) but uses it only
for `Lark(regex=True)`, which ectc never asks for. Importing it costs ~25 ms, a tenth of a
cold `ectc check`, so it is hidden while lark loads and put back at once: a later
`import regex` (the runtime's tokenizers) works as usual.
"""

import sys

if "lark" not in sys.modules and "regex" not in sys.modules:
    sys.modules["regex"] = None  # type: ignore[assignment]  # makes `import regex` fail fast
    try:
        import lark  # noqa: F401
    finally:
        del sys.modules["regex"]

from lark import Lark, Token, Tree  # noqa: E402
from lark.exceptions import (  # noqa: E402
    UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken,
)
from lark.parsers.lalr_analysis import Shift  # noqa: E402  (the LALR table's shift action)

__all__ = ["Lark", "Shift", "Token", "Tree", "UnexpectedCharacters", "UnexpectedEOF", "UnexpectedInput",
           "UnexpectedToken"]
