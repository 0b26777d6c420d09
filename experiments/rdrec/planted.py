"""The planted-signal probe of tests/test_rdrec_planted.py at a chosen budget: 100 items, the next item a fixed
function of the last; prints the POD student's test HR@1/HR@5 and each parameter group's relative change.

    PYTHONPATH=. python experiments/rdrec/planted.py independent 4     # scheme, epochs of 3,200 examples (50 steps)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.test_rdrec_planted import student_hr1


def main() -> None:
    scheme, epochs = sys.argv[1], int(sys.argv[2])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = student_hr1(Path(tmp), scheme, epochs, sys.argv[3:])
    keep = {k: round(v, 3) for k, v in metrics.items()
            if k in ("test/hr@1", "test/hr@5", "test/sampled/hr@1") or "rel_change" in k}
    print(f"RESULT {scheme} epochs={epochs} wall={time.perf_counter() - start:.0f}s {keep}")


if __name__ == "__main__":
    main()
