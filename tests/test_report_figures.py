"""Reports draw without pyplot: importing them into a program that chose its own matplotlib backend
(a notebook, a GUI) leaves that choice alone, and they still write their plots."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_importing_the_reports_keeps_the_backend_and_their_plots_are_still_written(tmp_path):
    # A fresh interpreter: this one may have imported matplotlib with another backend already.
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        import matplotlib
        matplotlib.use("svg")  # the program's own choice

        import pandas as pd

        import perennial.evaluate.freshness
        import perennial.report.sweep
        from perennial.report.run import plot_accuracy, plot_matrix

        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        rows = pd.DataFrame(
            {{
                "window": [1, 2, 3],
                "served_accuracy": [0.8, 0.7, 0.9],
                "static_accuracy": [0.8, 0.6, 0.5],
                "decision": ["", "promoted", "rejected"],
            }}
        )
        matrix = pd.DataFrame([[0.9, 0.5], [0.7, 0.8]], index=["v1", "v1.1"], columns=[0, 1])
        out = Path({str(tmp_path)!r})
        for path in (plot_accuracy(rows, out / "a.png", "tiny"), plot_matrix(matrix, out / "m.png")):
            assert path.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n", path
        assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
        # No figure was left in pyplot's global registry (a dependency may import pyplot itself).
        pyplot = sys.modules.get("matplotlib.pyplot")
        assert pyplot is None or not pyplot.get_fignums()
        assert not list(out.glob("*.tmp*"))  # written atomically, nothing left half-done
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
