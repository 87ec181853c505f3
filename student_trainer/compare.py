"""The paper's comparison (Table 1): detectors for the new modality from every trunk initialisation.

For one modality (HHA or flow) and each seed, trains and evaluates Fast R-CNN detectors initialised with
no init, copy from RGB, supervision transfer and — the control — supervision transfer from an untrained
(random-weight) teacher, each once fine-tuned and once with the trunk frozen (only the fc layers learn: what the
init alone carries); plus RGB alone and the late fusion of RGB with the supervision-transfer detector, all on
the same test split and proposals. Fusion comes twice: at the paper's 0.5 / 0.5, and — where the manifest has a
validation split (``depth_val`` / ``flow_val``), on which no detector trains or is tested — at the RGB weight
that fuses best there, chosen per seed from :data:`~student_trainer.fusion.FUSION_WEIGHTS` (a far weaker
second detector pulls an even average below RGB alone). Every run is resumable (a finished run is only re-read),
so rerunning the command continues where it stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import write_json_atomic, write_text_atomic
from shared.errors import ConfigError
from shared.manifest import Manifest, read_manifest
from shared.modalities import modality
from student_trainer.detect import detect_once, evaluate_run_on
from student_trainer.detect_eval import evaluate_fused, fused_map_by_weight
from student_trainer.detect_settings import CompareSettings, DetectSettings
from student_trainer.fusion import FUSION_WEIGHTS, choose_fusion_weight
from student_trainer.voc_eval import EvalResult

__all__ = ["METHODS", "Method", "comparison_markdown", "plot_comparison", "run_compare", "seed_stats"]

@dataclass(frozen=True)
class Method:
    """One row of the comparison: a detector init, fine-tuned or with the trunk frozen.

    Attributes:
        key: run folder prefix and row key. label: the table's row label. init: ``detect --init``.
        source: which checkpoint initialises the trunk (``rgb``, ``transfer``, ``control``; None for no init).
        frozen: ``--freeze-trunk``.
    """

    key: str
    label: str
    init: str
    source: str | None
    frozen: bool = False

    def frozen_variant(self) -> Method:
        return Method(f"{self.key}-frozen", f"{self.label}, trunk frozen", self.init, self.source, True)


_INITS = (
    Method("no-init", "no init (random trunk)", "random", None),
    Method("copy-rgb", "copy from RGB", "copy-rgb", "rgb"),
    Method("transfer", "supervision transfer", "transfer", "transfer"),
    Method("control", "transfer from an untrained teacher (control)", "transfer", "control"),
)
METHODS: tuple[Method, ...] = (*_INITS, *(m.frozen_variant() for m in _INITS))


def _detect(s: CompareSettings, out: Path, **kw: Any) -> dict[str, Any]:
    return detect_once(DetectSettings(manifest=s.manifest, out=out, profile=s.profile, proposals=s.proposals,
                                      device=s.device, progress=s.progress, resume=True, **kw))


def _rgb_alone(s: CompareSettings, test_split: str) -> Path:
    """The RGB detector evaluated on this modality's test split, in a folder of its own."""
    out = s.out / "rgb"
    src = s.rgb_run / "checkpoint.pt"
    if not src.is_file():
        raise ConfigError(f"RGB detector checkpoint {src} does not exist; train it with "
                          "`student-trainer detect --modality rgb` first")
    config = json.loads((s.rgb_run / "config.json").read_text())["settings"]
    if not (out / "checkpoint.pt").is_file():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out / "checkpoint.pt")
    # the run's own init too: a trunk it copied (e.g. ImageNet AlexNet) is rebuilt before its checkpoint loads
    keep = ("init", "trunk_checkpoint", "freeze_trunk", "iterations", "images_per_batch", "rois_per_image", "lr",
            "fc_width", "width", "trunk", "batch_norm", "dropout", "seed", "train_splits", "max_proposals",
            "short_side", "max_side")
    _detect(s, out, modality="rgb", test_split=test_split,
            **{k: config[k] for k in keep if config.get(k) is not None})
    return out


def seed_stats(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample sd (0 for one value) and count of a row's mAPs over seeds: the tables' ``mAP`` entry."""
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def _fused_run(result: EvalResult) -> dict[str, Any]:
    return {"mAP": result.mean_ap, "ap": {k: (None if math.isnan(v) else v) for k, v in result.ap_by_class().items()}}


def _validation_split(s: CompareSettings, manifest: Manifest) -> str | None:
    """``--fusion-val-split``, else the modality's validation split where the manifest has labelled frames in it."""
    if s.fusion_val_split is not None:
        return s.fusion_val_split
    split = modality(s.modality).val_split
    return split if split and any(f.labeled for f in manifest.split(split)) else None


def _fusion_chosen_on(s: CompareSettings, manifest: Manifest, rgb_dir: Path, val_split: str, test_split: str
                      ) -> list[dict[str, Any]]:
    """Per seed: RGB and the transfer detector scored on ``val_split``, the RGB weight that fuses best there, and
    the fusion at that weight on the test split."""
    rgb_val = evaluate_run_on(rgb_dir, val_split, device=s.device, progress=s.progress)
    runs = []
    for seed in s.seeds:
        run = s.out / f"transfer-seed{seed}"
        val = evaluate_run_on(run, val_split, device=s.device, progress=s.progress)
        val_map = fused_map_by_weight(rgb_val, val, manifest, val_split, FUSION_WEIGHTS)
        weight = choose_fusion_weight(val_map)
        test = evaluate_fused(rgb_dir, run, manifest, test_split, weight=weight, out=s.out / f"fusion-val-seed{seed}")
        runs.append({**_fused_run(test), "weight": weight, "val_split": val_split,
                     "val_mAP": {f"{w:g}": m for w, m in val_map.items()}})
    return runs


def run_compare(s: CompareSettings) -> dict[str, Any]:
    """Run (or resume) every detector of the comparison; write compare.json and report.md."""
    ckpts = {"rgb": s.copy_rgb or s.rgb_run / "checkpoint.pt", "transfer": s.transfer, "control": s.control}
    test_split = DetectSettings(modality=s.modality, manifest=s.manifest, out=s.out).default_test_split()
    schedule = {} if s.iterations is None else {"iterations": s.iterations}
    rows: dict[str, dict[str, Any]] = {}
    for m in METHODS:
        if m.source == "control" and s.control is None:
            continue
        runs = []
        for seed in s.seeds:
            kw = {"trunk_checkpoint": ckpts[m.source]} if m.source else {}
            runs.append(_detect(s, s.out / f"{m.key}-seed{seed}", modality=s.modality, init=m.init, seed=seed,
                                freeze_trunk=m.frozen, trunk_lr_mult=s.trunk_lr_mult, **schedule, **kw))
        rows[m.key] = {"label": m.label, "mAP": seed_stats([r["mAP"] for r in runs]), "runs": runs}
    rgb_dir = _rgb_alone(s, test_split)
    rgb = json.loads((rgb_dir / "summary.json").read_text())
    rows["rgb"] = {"label": "RGB alone", "mAP": seed_stats([rgb["mAP"]]), "runs": [rgb]}
    manifest = read_manifest(s.manifest)
    fused = [_fused_run(evaluate_fused(rgb_dir, s.out / f"transfer-seed{seed}", manifest, test_split,
                                       out=s.out / f"fusion-seed{seed}")) for seed in s.seeds]
    rows["fusion"] = {"label": f"RGB + {s.modality.upper()} (late fusion, transfer)", "mAP": seed_stats(
        [f["mAP"] for f in fused]), "runs": fused}
    val_split = _validation_split(s, manifest)
    if val_split is not None:
        fused = _fusion_chosen_on(s, manifest, rgb_dir, val_split, test_split)
        weights = ", ".join(f"{f['weight']:g}" for f in fused)
        rows["fusion-val"] = {"label": f"RGB + {s.modality.upper()} (late fusion, transfer; RGB weight chosen on "
                              f"{val_split}: {weights})",
                              "mAP": seed_stats([f["mAP"] for f in fused]), "runs": fused}
    report = {"modality": s.modality, "test_split": test_split, "val_split": val_split, "seeds": s.seeds,
              "profile": s.profile, "rows": rows}
    s.out.mkdir(parents=True, exist_ok=True)
    plot_comparison(report, s.out / "comparison.png")
    write_text_atomic(s.out / "report.md", comparison_markdown(report))
    write_json_atomic(s.out / "compare.json", report)  # last: the comparison is complete once it exists
    return report


def comparison_markdown(report: dict[str, Any]) -> str:
    """Table 1 style: rows = methods, columns = per-class AP (seed mean) and mAP mean ± std over seeds."""
    rows = report["rows"]
    classes = list(next(iter(rows.values()))["runs"][0]["ap"])
    head = "| method | " + " | ".join(classes) + " | mAP |\n|---|" + "---|" * (len(classes) + 1) + "\n"
    lines = []
    for row in rows.values():
        per_class = []
        for c in classes:
            vals = [r["ap"].get(c) for r in row["runs"] if r["ap"].get(c) is not None]
            per_class.append(f"{100 * np.mean(vals):.1f}" if vals else "–")
        m = row["mAP"]
        spread = f" ± {100 * m['std']:.1f}" if m["n"] > 1 else ""
        lines.append(f"| {row['label']} | " + " | ".join(per_class) + f" | **{100 * m['mean']:.1f}**{spread} |")
    title = (f"### {report.get('title') or report['modality'].upper()} detection on `{report['test_split']}` "
             f"(VOC AP at IoU 0.5, %, {len(report['seeds'])} seed(s), profile {report['profile']})\n\n")
    return title + head + "\n".join(lines) + "\n"


def plot_comparison(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars of each row's mAP (mean over seeds) with the seed sd as error bars and value labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = list(report["rows"].values())
    labels = [textwrap.fill(r["label"], 48) for r in rows]  # long merged-table labels would squeeze the bars
    fig = Figure(figsize=(10, 0.8 + 0.3 * sum(label.count("\n") + 1 for label in labels)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    means = [100 * r["mAP"]["mean"] for r in rows]
    stds = [100 * r["mAP"]["std"] for r in rows]
    bars = ax.barh(labels, means, xerr=stds, color="#4c72b0", ecolor="#222222", capsize=3)
    ax.bar_label(bars, labels=[f"{m:.1f}" + (f" ± {d:.1f}" if r["mAP"]["n"] > 1 else "")
                               for m, d, r in zip(means, stds, rows, strict=True)], padding=4, fontsize=8)
    ax.set_xlim(0, 118)  # room for the labels right of a bar near 100
    ax.invert_yaxis()
    ax.set_xlabel(f"mAP (%), mean ± sd over {len(report['seeds'])} seed(s)")
    ax.set_title(textwrap.fill(f"{report.get('title') or report['modality'].upper()} detectors on "
                               f"{report['test_split']}", 70))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
