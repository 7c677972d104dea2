"""The README's Python snippet runs as printed (docs/design.md section 9, rule 11: the README walks a newcomer).

The block is found by its heading, so renaming or emptying the section fails here instead of silently
dropping the test.
"""

import math
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "## The method in code"


def python_block_under(heading: str) -> str:
    """The first ```python block between `heading` and the next level-2 heading of README.md."""
    text = README.read_text(encoding="utf-8")
    assert heading in text.splitlines(), f"README.md has no line {heading!r}: update {__file__} with the README"
    section = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"^```python\n(.*?)^```", section, flags=re.S | re.M)
    assert found, f"no ```python block under {heading!r} in README.md"
    return found.group(1)


def test_method_in_code_snippet_runs():
    code = python_block_under(HEADING)
    namespace = {"__name__": "readme_snippet"}
    exec(compile(code, f"README.md ({HEADING})", "exec"), namespace)
    # the snippet trains for a few steps: it must end with a finite loss and the stats it names
    assert math.isfinite(namespace["loss"].item())
    assert {"target_std", "pred_std", "tau", "masked_fraction"} <= set(namespace["stats"])
