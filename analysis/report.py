"""report.html: one self-contained page (images embedded as base64 data URIs, no external files)."""
from __future__ import annotations

import base64
import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from analysis.curve import resolution_text
from analysis.front import Front, knee_rule_text
from analysis.policies import parse_schedule, schedule_summary
from analysis.results import SYNTHETIC_NOTE, Experiment, finished_mask, stopped_mask
from analysis.stats import summarize
from layerout.files import atomic_write
from layerout.formatting import pct

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px;line-height:1.45}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.86em;margin:.6em 0}th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.knee td{background:#fdecea;font-weight:600}td.test{color:#777}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:.82em;white-space:pre-wrap}
.muted{color:#666;font-size:.88em}.kv td:first-child{font-weight:600}
.warn{background:#fff3cd;border:1px solid #e0b400;padding:6px 10px}
.verdict{font-size:1.08em;background:#eef4fb;border-left:4px solid #1f77b4;padding:8px 12px}
"""


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _num(x: Any, fmt: str = "{:.4g}") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _esc(x)
    return "–" if math.isnan(v) else fmt.format(v)


def image_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _kv_table(d: Mapping[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v)
        rows.append(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>")
    return "<table class='kv'>" + "".join(rows) + "</table>" if rows else "<p class='muted'>(none)</p>"


def margin_text(r: Mapping[str, Any]) -> str:
    """A front row's margin over the shorter-training curve in points, with its 95% interval when
    confirmed ('+0.42 [−0.10, +0.94] (3 seeds)'); '–' for the curve's own points."""
    try:
        m = float(r.get("margin"))
    except (TypeError, ValueError):
        return "–"
    if math.isnan(m):
        return "–"
    text = f"{100 * m:+.2f}"
    lo, hi, n = r.get("margin_ci_low"), r.get("margin_ci_high"), int(r.get("confirmed_runs") or 0)
    if n and lo is not None and math.isfinite(float(lo)):
        text += f" [{100 * float(lo):+.2f}, {100 * float(hi):+.2f}] ({n} seeds)"
    elif n:
        text += f" ({n} seed{'s' if n > 1 else ''})"
    if bool(r.get("beyond_curve")):
        text += " (beyond the curve)"
    return text


def front_table_html(fr: Front, policy_files: Mapping[str, str] | None = None) -> str:
    """The front as an HTML table (id="front-table"); test accuracy shown, never used to choose."""
    policy_files = policy_files or {}
    head = ("<tr><th>#</th><th>trial</th><th>family</th><th>paper config / reference</th><th>schedule</th>"
            "<th>epochs</th><th>val acc</th><th>compute saved</th>"
            "<th>margin over shorter training<br><span class='muted'>(points; 95% interval)</span></th>"
            "<th>time saved</th><th>params frozen</th>"
            "<th>test acc<br><span class='muted'>(not used to choose)</span></th><th>policy file</th></tr>")
    body = []
    for i, (_, r) in enumerate(fr.front.iterrows(), 1):
        knee = r["trial_id"] == fr.knee
        tags = (" ★ knee" if knee else "") + (" (stopped early)" if bool(r.get("stopped", False)) else "")
        label = r["paper_config"] or r.get("reference", "") or ""
        epochs = r.get("config/train/epochs", r.get("epochs_done"))
        body.append(
            f"<tr class='{'knee' if knee else ''}'><td class='num'>{i}</td><td>{_esc(r['trial_id'])}{_esc(tags)}</td>"
            f"<td>{_esc(r['family'])}</td><td>{_esc(label)}</td>"
            f"<td>{_esc(schedule_summary(parse_schedule(r['policy'])))}</td><td class='num'>{_num(epochs, '{:.0f}')}</td>"
            f"<td class='num'>{pct(r['val_accuracy'])}</td><td class='num'>{pct(r['compute_saved_frac'], 1)}</td>"
            f"<td class='num'>{_esc(margin_text(r))}</td>"
            f"<td class='num'>{pct(r['time_saved_frac'], 1)}</td><td class='num'>{pct(r['params_frozen_frac'], 1)}</td>"
            f"<td class='num test'>{pct(r['test_accuracy'])}</td>"
            f"<td>{_esc(policy_files.get(r['trial_id'], ''))}</td></tr>"
        )
    return f"<table id='front-table'>{head}{''.join(body)}</table>"


def _trials_table(exp: Experiment, fr: Front) -> str:
    t = exp.trials
    fin, stp = finished_mask(exp), stopped_mask(exp)
    front_ids = set(fr.front["trial_id"])
    head = ("<tr><th>trial</th><th>status</th><th>epochs</th><th>family</th><th>paper config / reference</th>"
            "<th>schedule</th>"
            "<th>val acc</th><th>compute saved</th><th>time saved</th><th>test acc</th><th>on front</th></tr>")
    rows = []
    order = t.sort_values("val_accuracy", ascending=False, na_position="last").index
    for idx in order:
        r = t.loc[idx]
        state = r["status"] + (" · stopped early" if stp.loc[idx] else "") + ("" if fin.loc[idx] or stp.loc[idx] else " · unfinished")
        err = r.get("error")
        if isinstance(err, str) and err.strip():
            state += f": {err.strip()[:120]}"
        rows.append(
            f"<tr><td>{_esc(r['trial_id'])}</td><td>{_esc(state)}</td><td class='num'>{_num(r['epochs_done'], '{:.0f}')}</td>"
            f"<td>{_esc(r['family'])}</td><td>{_esc(r['paper_config'] or r.get('reference', ''))}</td>"
            f"<td>{_esc(schedule_summary(parse_schedule(r['policy'])))}</td>"
            f"<td class='num'>{pct(r['val_accuracy'])}</td><td class='num'>{pct(r['compute_saved_frac'], 1)}</td>"
            f"<td class='num'>{pct(r['time_saved_frac'], 1)}</td><td class='num test'>{pct(r['test_accuracy'])}</td>"
            f"<td>{'yes' if r['trial_id'] in front_ids else ''}</td></tr>"
        )
    return f"<table id='trials-table'>{head}{''.join(rows)}</table>"


def curve_text(fr: Front) -> str:
    """The shorter-training curve's points: 'baseline (8 epochs) 97.50% at 0.0% saved; ...'."""
    if fr.curve is None or fr.curve.empty:
        return "none (no run of the unfrozen model finished)"
    return "; ".join(f"{r['name']} ({r['epochs']} epochs): {pct(r['val_accuracy'])} at {pct(r['compute_saved_frac'], 1)} "
                     "saved" for _, r in fr.curve.iterrows())


def confirm_table_html(fr: Front, exp: Experiment) -> str:
    """The confirmation on fresh seeds (id="confirm-table"): per policy, its runs, and the mean ±
    standard deviation and 95% interval of each metric; time saved's spread shows how noisy the
    wall-clock is."""
    if fr.confirm is None or fr.confirm.empty:
        return ""
    metrics = [m for m in ("val_accuracy", "test_accuracy", "compute_saved_frac", "time_saved_frac")
               if m in fr.confirm.columns]
    summ = summarize(fr.confirm, metrics)
    t = exp.trials.set_index("trial_id")
    seeds = sorted({int(s) for s in fr.confirm["seed"]})
    head = ("<tr><th>trial</th><th>family</th><th>paper config / reference</th><th>runs</th><th>search val acc</th>"
            + "".join(f"<th>{_esc(m.replace('_', ' '))}<br><span class='muted'>mean ± sd [95% interval]</span></th>"
                      for m in metrics) + "</tr>")
    rows = []
    for _, r in summ.iterrows():
        tid = str(r["trial_id"])
        tr = t.loc[tid] if tid in t.index else {}
        label = (tr.get("paper_config", "") or tr.get("reference", "")) if len(tr) else ""
        cells = []
        for m in metrics:
            cell = pct(r[m])
            if math.isfinite(float(r[f"{m}_std"])):
                cell += f" ± {pct(r[f'{m}_std'])}"
            if math.isfinite(float(r[f"{m}_ci_low"])):
                cell += f" [{pct(r[f'{m}_ci_low'])}, {pct(r[f'{m}_ci_high'])}]"
            cells.append(f"<td class='num'>{_esc(cell)}</td>")
        rows.append(f"<tr><td>{_esc(tid)}</td><td>{_esc(tr.get('family', '') if len(tr) else '')}</td>"
                    f"<td>{_esc(label)}</td><td class='num'>{int(r['runs'])}</td>"
                    f"<td class='num'>{pct(tr.get('val_accuracy') if len(tr) else None)}</td>{''.join(cells)}</tr>")
    return (f"<p>Re-trained on {len(seeds)} fresh seeds ({', '.join(map(str, seeds))}), seeds no trial of the search "
            "used; the front, the knee and the margins above use these means. The spread of time saved is the "
            "wall-clock's noise on this machine.</p>"
            f"<table id='confirm-table'>{head}{''.join(rows)}</table>")


def build_report(
    exp: Experiment,
    fr: Front,
    images: Mapping[str, str | Path],
    commands: Mapping[str, str],
    policy_files: Mapping[str, str] | None = None,
) -> str:
    """The report as an HTML string. ``images``: caption -> PNG path (embedded);
    ``commands``: trial id -> retrain command; ``policy_files``: trial id -> file shown."""
    parts = _head(exp, fr, _summary(exp, fr))
    parts += _front_and_figures(exp, fr, dict(images), policy_files)
    parts += _retrain(exp, fr, commands)
    parts += _trials_and_settings(exp, fr)
    return "\n".join(parts)


def _summary(exp: Experiment, fr: Front) -> dict[str, Any]:
    """The summary table: the verdict, what ran, the front, the knee, the curve, the confirmation."""
    meta = exp.meta
    t = exp.trials
    fin, stp = finished_mask(exp), stopped_mask(exp)
    n_err = int((t["status"] == "ERROR").sum())
    k = fr.knee_row
    summary = {
        "verdict": fr.verdict,
        "experiment": exp.name,
        "directory": str(exp.path.resolve()),
        "model / dataset": f"{exp.model or '?'} / {exp.dataset or '?'}",
        "epoch budget": exp.epoch_budget if exp.epoch_budget else "?",
        "trials": f"{len(t)} in all: {int(fin.sum())} finished, {int(stp.sum())} stopped early by the scheduler, "
                  f"{n_err} failed, {len(t) - int(fin.sum()) - int(stp.sum()) - n_err} other",
        "front built from": f"{len(fr.candidates)} trials ("
                            + ("finished and stopped-early" if fr.include_stopped else "full epoch budget only")
                            + (f"; ignored for missing metrics: {', '.join(fr.dropped)}" if fr.dropped else "") + ")",
        "objectives": ", ".join(f"{n} ({m})" for n, m in fr.objectives),
        "knee": f"{k['trial_id']} ({k['family']}): val acc {pct(k['val_accuracy'])}, "
                f"compute saved {pct(k['compute_saved_frac'], 1)}, test acc {pct(k['test_accuracy'])} "
                f"({knee_rule_text(fr)})",
        "baseline val accuracy": pct(fr.baseline_accuracy) if fr.baseline_accuracy is not None else "no baseline trial",
        "shorter-training curve": curve_text(fr),
        "validation resolution": resolution_text(fr.val_images),
        "confirmation": (f"{int(fr.confirm['trial_id'].nunique())} trials re-trained on "
                         f"{int(fr.confirm['seed'].nunique())} fresh seeds (confirm.csv)"
                         if fr.confirm is not None and len(fr.confirm) else
                         f"none: one seed per point (python -m analysis.confirm {exp.path} --top 3 --seeds 3)"),
    }
    for ref, hv in fr.hypervolume.items():
        summary[f"hypervolume vs {ref}"] = f"{hv:.5f}"
    summary["results read from"] = exp.source
    for key in ("created", "finished"):
        if meta.get(key):
            summary[key] = meta[key]
    return summary


def _head(exp: Experiment, fr: Front, summary: dict[str, Any]) -> list[str]:
    """The page's head, the verdict, the objectives' meaning, the summary."""
    return [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(exp.name)} · layerout-tune report</title><style>{CSS}</style></head><body>",
        f"<h1>Layer-freezing search: {_esc(exp.name)}</h1>",
        f"<p id='verdict' class='verdict'>{_esc(fr.verdict)}</p>",
        *([f"<p class='warn'><b>{_esc(SYNTHETIC_NOTE)}</b></p>"] if exp.synthetic else []),
        "<p class='muted'>Validation accuracy (a held-out split of the training set) and compute saved "
        "(training FLOPs autograd ran, relative to the unfrozen model on the same steps) are the two objectives. "
        "Test accuracy is shown for reference and is never used to choose.</p>",
        "<h2>Summary</h2>", _kv_table(summary),
        "<h2>Pareto front</h2>",
    ]


def _front_and_figures(exp: Experiment, fr: Front, cap: dict[str, str | Path],
                       policy_files: Mapping[str, str] | None) -> list[str]:
    """The Pareto plot and table with what they mean, the confirmation, the other figures."""
    parts: list[str] = []
    if "pareto" in cap:
        parts.append(f"<img alt='Pareto front' src='{image_data_uri(cap['pareto'])}'>")
    parts.append(front_table_html(fr, policy_files))
    parts.append("<p class='muted'>The knee is the point farthest beyond the straight line joining the two "
                 "ends of the front policies above the shorter-training curve (of the whole front when none is "
                 "above it), with both axes scaled to [0, 1]; policies/knee.json and --pick knee hold this trial. "
                 "Hypervolume: area (fraction × fraction) "
                 "dominated by the front above the reference point.</p>")
    parts.append("<p class='muted'>Margin over shorter training: the policy's validation accuracy minus that of the "
                 "unfrozen model trained for fewer epochs at the same compute saved (the dashed curve of the plot: "
                 "the baseline and the reference points joined by straight lines; held flat beyond the cheapest "
                 "reference point), in percentage points. Above 0 the policy beat simply training less. Confirmed "
                 "policies show the mean over fresh seeds and its 95% interval (paired by seed); a single run is "
                 f"one seed, and {_esc(resolution_text(fr.val_images))}.</p>")
    if fr.confirm is not None and len(fr.confirm):
        parts += ["<h2>Confirmation on fresh seeds</h2>", confirm_table_html(fr, exp)]
    if "front_policies" in cap:
        parts += ["<h2>Where freezing pays: the front's policies per unit</h2>",
                  f"<img alt='Front policies per unit' src='{image_data_uri(cap['front_policies'])}'>",
                  "<p class='muted'>Scheduled value: layerout = freeze probability v<sub>i</sub> per epoch "
                  "(random v: mean 0.5); freezeout = fraction of training the unit is frozen (1 − t<sub>i</sub>); "
                  "prefix = 1 for the frozen prefix; adaptive = fraction of training after the unit froze. "
                  "Measured: fraction of epochs each unit was frozen (epochs.csv).</p>"]
    if "curves" in cap:
        parts += ["<h2>Learning curves</h2>", f"<img alt='Validation accuracy by epoch' src='{image_data_uri(cap['curves'])}'>"]
    if "hypervolume" in cap:
        parts += ["<h2>Search progress: hypervolume</h2>",
                  f"<img alt='Hypervolume of the front so far' src='{image_data_uri(cap['hypervolume'])}'>",
                  "<p class='muted'>The hypervolume of the front found so far (the area it dominates above the "
                  "fixed reference point (0, 0), in fraction × fraction), after each trial that ended, in the order "
                  "they ended. Left: against the number of trials ended; right: against the epochs trained by all of "
                  "them, trials stopped early included. A curve that flattens early means later trials added little "
                  "to the front; at equal epochs, a higher curve means early stopping spent the budget on trials that "
                  "mattered. Only trials that trained the full budget add points.</p>"]
    for name, p in cap.items():
        if name not in ("pareto", "front_policies", "curves", "hypervolume"):
            parts += [f"<h2>{_esc(name)}</h2>", f"<img alt='{_esc(name)}' src='{image_data_uri(p)}'>"]
    return parts


def _retrain(exp: Experiment, fr: Front, commands: Mapping[str, str]) -> list[str]:
    """How to retrain each front policy (its command line) or export one."""
    parts: list[str] = []
    parts.append("<h2>Retrain a front policy</h2><p class='muted'>Run from the experiment directory "
                 "(no Ray needed). Or export one: <code>python -m analysis.export "
                 f"{_esc(exp.path)} --pick knee -o policy.json</code>.</p>")
    cmd_lines = []
    for _, r in fr.front.iterrows():
        tid = r["trial_id"]
        if tid in commands:
            tag = "  # knee" if tid == fr.knee else ""
            cmd_lines.append(f"# {tid}: {r['family']}, val acc {pct(r['val_accuracy'])}, "
                             f"compute saved {pct(r['compute_saved_frac'], 1)}{tag}\n{commands[tid]}")
    parts.append(f"<pre id='retrain-commands'>{_esc(chr(10).join(cmd_lines))}</pre>")
    return parts


def _trials_and_settings(exp: Experiment, fr: Front) -> list[str]:
    """Every trial, the search's settings and versions, when the report was written."""
    meta, t = exp.meta, exp.trials
    parts: list[str] = []
    parts.append(f"<h2>All trials</h2><details><summary>{len(t)} trials</summary>{_trials_table(exp, fr)}</details>")
    parts.append("<h2>Search settings</h2>")
    if meta.get("space_file"):
        parts.append(f"<p>search space file: <code>{_esc(meta['space_file'])}</code></p>")
    parts.append(_kv_table(meta.get("options") or {}))
    if meta.get("space") is not None:
        parts.append("<details><summary>resolved search space</summary>"
                     f"<pre>{_esc(json.dumps(meta['space'], indent=2, default=str))}</pre></details>")
    if meta.get("units"):
        parts.append(f"<p>units ({len(meta['units'])}, input → output): {_esc(', '.join(map(str, meta['units'])))}</p>")
    parts.append("<h2>Versions</h2>" + _kv_table(meta.get("versions") or {}))
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts.append(f"<p class='muted'>Written by <code>python -m analysis</code> at {stamp}.</p></body></html>")
    return parts


def write_report(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """``build_report(*args, **kwargs)`` written to ``path`` (atomically)."""
    return atomic_write(Path(path), build_report(*args, **kwargs))

