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



def test_every_summary_block_has_its_result():
    """A block whose result is missing renders as a placeholder; none may be left in a doc."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "(no result yet" not in text and "(no output for example" not in text \
            and "(no summary is registered" not in text and "(no example output yet" not in text, path.name


def test_no_doc_narrates_how_it_was_built():
    """Docs describe the tool as it is; how it got here belongs to git history."""
    words = ("this session", "session 1", "session 2", "session 3", "session 4", "session 5", "tried and dropped",
             "we tried", "was dropped")
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text().lower()
        hits = [w for w in words if w in text]
        assert not hits, f"{path.name}: {hits}"


def test_readme_stays_short():
    """The README says what flopgap is, the two commands, one example per command and links:
    the handbook is docs/."""
    assert len((ROOT / "README.md").read_bytes()) <= 14_000
