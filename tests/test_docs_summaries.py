"""Every figure between summary markers in the docs comes from benchmarks/results: the
docs must be what benchmarks/summarize.py makes of the results, to the character."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_doc_summaries_are_generated_from_the_results():
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "summarize.py"), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr

