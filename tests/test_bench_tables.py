"""The benchmarks' README tables are rendered from their committed result files."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def test_the_step_table_has_a_line_per_result_row_with_its_ratios():
    files = [RESULTS / "step.json", RESULTS / "step_small.json"]
    rows = [r for f in files for r in json.loads(f.read_text())["rows"]]
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--table",
                          *map(str, files)], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 2 + len(rows)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for row, line in zip(rows, lines[2:], strict=True):
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        assert cells["model"] == row["model"]
        assert cells["defaults"] == f"{row['step_ratio']['defaults']:.3f}x"
        assert cells["materialised"] == f"{row['step_ratio']['materialized']:.3f}x"
