"""benchmarks/search_scale.py --quick runs end to end: both sides (the project's search around a
trial that trains nothing, plain Ray Tune on the same function), then python -m analysis on the
experiment. Asserts on what the JSON holds, never on times."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from helpers import REPO, cli_env


def test_search_scale_quick_runs_both_sides_and_the_analysis(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, "benchmarks/search_scale.py", "--quick", "--json", str(out)], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    ours, plain = doc["sides"]["ours"], doc["sides"]["plain"]
    assert set(doc["sides"]) == {"ours", "plain", "plain-space"}
    for side in doc["sides"].values():
        assert side["trials"] == doc["trials"] == 20
        assert side["search_s"] >= side["fit_s"] > 0 and side["driver_peak_rss_mb"] > 0
        assert side["dir_bytes"]["total"] == sum(v for k, v in side["dir_bytes"].items() if k != "total") > 0
        assert side["dir_bytes"]["result.json"] > 0 and side["searcher_suggest"]["calls"] >= 20
    # every trial reports epoch 2 (the demo's first rung), so each is ranked there once
    assert ours["moasha"]["calls"] >= 20 and plain["asha"]["calls"] >= 20
    assert ours["moasha"]["largest_size"] <= 20
    assert ours["optuna_trials"] == 20 + ours["repeats"]
    for base in ("plain", "plain-space"):
        for key in ("search_s", "fit_s"):
            assert math.isclose(doc["per_trial_s"][base][key], doc["sides"][base][key] / 20)
            assert math.isclose(doc["ratio_ours_to"][base][key], doc["per_trial_s"]["ours"][key] / doc["per_trial_s"][base][key])
    analysis = doc["analysis"]
    assert analysis["exit_status"] == 0 and analysis["wall_s"] > 0 and analysis["peak_rss_mb"] > 0
    assert {"pareto.png", "report.html", "pareto.csv"} <= set(analysis["files"])
    assert "ours / plain-space per trial" in proc.stdout and "Targets:" in proc.stdout
