"""The demo's report folder: comparison tables, plots, the contact sheet and the timings, in one place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from shared.atomic import write_text_atomic
from shared.modalities import names

__all__ = ["plot_transfer_curves", "store_line", "timings_markdown", "transfer_line", "write_demo_report"]

# The demo trains a student of every modality that has transfer pairs (shared.modalities).
STUDENTS = tuple(names(students_only=True))


def plot_transfer_curves(runs: dict[str, Path], path: Path) -> Path:
    """Loss and cosine-to-target of student runs (their metrics.jsonl) against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    ax_loss, ax_cos = fig.subplots(1, 2)
    for name, metrics in runs.items():
        if not metrics.is_file():
            continue
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], label=name)
        ax_cos.plot(steps, [r["cosine"] for r in rows], label=name)
    ax_loss.set(xlabel="step", ylabel="L2 loss (unit-RMS targets)", title="supervision transfer: loss")
    ax_cos.set(xlabel="step", ylabel="cosine(student, teacher pool5)", title="agreement with the teacher")
    ax_cos.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def store_line(store: Path) -> str:
    """One Markdown list item describing a feature store: teacher, map shape, frames, size, compression, norms."""
    try:
        meta = json.loads((store / "zarr.json").read_text())["attributes"]["xmodal"]
        col = json.loads((store / meta["collections"][0] / "zarr.json").read_text())["attributes"]["xmodal"]
    except (OSError, KeyError, ValueError):
        return f"- `{store.name}`: not available"
    s = col.get("summary", {})
    return (f"- `{store.name}`: teacher `{meta['teacher']['arch']}` ({meta['teacher']['weights_digest'][:12]}), "
            f"map {tuple(col['shape'])} of {'x'.join(map(str, col.get('input_size', ())))} frames, "
            f"{s.get('frames_done', 0)} frames, {s.get('stored_bytes', 0) / 1e6:.1f} MB, "
            f"compression {s.get('compression_ratio') or 0:.2f}x vs float32, {100 * s.get('zero_fraction', 0):.0f} % "
            f"zeros, mean L2 norm {s.get('mean_l2_norm', 0):.2f}")


def transfer_line(name: str, summary: Path) -> str | None:
    """One Markdown list item with a student run's final loss, cosine, residual, speed and target waiting
    (from its ``summary.json``); None when the run has not finished."""
    if not summary.is_file():
        return None
    final = json.loads(summary.read_text()).get("final", {})
    return (f"- `{name}`: final loss {final.get('loss', float('nan')):.3f}, cosine "
            f"{final.get('cosine', float('nan')):.3f}, residual variance "
            f"{final.get('residual', float('nan')):.2f}, {final.get('steps_per_s', 0):.2f} steps/s, "
            f"waiting for targets {100 * final.get('wait_fraction', 0):.1f} % of the time")


def write_demo_report(out: Path, runs: Path, data: Path, report: Path, timings: dict[str, dict[str, float]],
                      profile: str) -> Path:
    """Assemble ``report/report.md`` (+ PNGs) from the runs of the demo."""
    report.mkdir(parents=True, exist_ok=True)
    parts = [f"# Cross-modal supervision transfer — demo report (profile `{profile}`)\n"]
    sheet = data / "contact_sheet.png"
    if sheet.is_file():
        shutil.copy2(sheet, report / "contact_sheet.png")
        parts.append("![contact sheet](contact_sheet.png)\n")
    parts.append("## Teacher feature stores\n")
    parts += [store_line(out / s) for s in ("store", "store-untrained")]
    curves = {f"{p}-{m}": runs / f"{p}-{m}" / "metrics.jsonl" for p in ("transfer", "control") for m in STUDENTS}
    plot_transfer_curves(curves, report / "transfer_curves.png")
    parts.append("\n## Supervision transfer\n\n![transfer curves](transfer_curves.png)\n")
    parts += [line for name in curves if (line := transfer_line(name, runs / name / "summary.json"))]
    rgb = runs / "rgb" / "summary.json"
    if rgb.is_file():
        r = json.loads(rgb.read_text())
        parts.append(f"\n## RGB teacher detector\n\nmAP {100 * r['mAP']:.1f} on `{r['test_split']}` "
                     f"({r['train_frames']} training frames, {r['train_seconds']:.0f} s)\n")
    for m in STUDENTS:
        table = runs / f"compare-{m}" / "report.md"
        if table.is_file():
            parts.append("\n" + table.read_text())
            plot = runs / f"compare-{m}" / "comparison.png"
            if plot.is_file():
                shutil.copy2(plot, report / f"comparison_{m}.png")
                parts.append(f"\n![{m} comparison](comparison_{m}.png)\n")
    parts.append(timings_markdown(timings))
    path = report / "report.md"
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path


def timings_markdown(timings: dict[str, dict[str, float]]) -> str:
    """The stage-time table: the seconds of the run that did each stage's work, and of the last check of a
    rerun that found it done."""
    def cell(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    lines = ["\n## Time per stage (s)\n", "| stage | work | rerun, already done |", "|---|---|---|"]
    lines += [f"| {k} | {cell(v.get('seconds'))} | {cell(v.get('skip_seconds'))} |" for k, v in timings.items()]
    total = sum(v.get("seconds", 0.0) for v in timings.values())
    lines.append(f"| total | {total:.1f} | |")
    return "\n".join(lines)
