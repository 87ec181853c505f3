"""A recipe's report: the paper's table per evaluation from the ``compare`` runs of every teacher's student, the
mean over evaluations (JHMDB's 3 splits), the stores, the students, the settings and seeds, the stage times.

Tables are built from ``compare.json`` files and printed with :func:`student_trainer.compare.comparison_markdown`,
so a merged table reads exactly like a single comparison: rows = methods, columns = per-class AP (mean over the
runs of the row) and mAP (mean ± spread when a row has several runs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.atomic import write_json_atomic, write_text_atomic

__all__ = ["mean_table", "merged_table", "recipe_report", "table_markdown"]


def merged_table(compares: Mapping[str, Mapping[str, Any]], teacher_labels: Mapping[str, str], modality: str,
                 weights: str, profile: str, evaluation: str) -> dict[str, Any]:
    """One table from the comparisons of several teachers' students on one evaluation.

    Args:
        compares: ``{teacher: compare.json}``, all on the same manifest, splits and seeds (the teacher-free rows
            are the first one's: the others linked those runs).
        teacher_labels: ``{teacher: name shown}``.
        modality: ``hha`` / ``flow``.
        weights: ``imagenet`` / ``random`` (named in the labels of the rows that use them).
        profile: the recipe profile named in the title.
        evaluation: its name, in the title unless it is the test split's (``split1``: ``split1 flow_test``).

    Returns:
        A comparison report (``compare.json`` form) whose rows are: no init, copy from RGB, transfer from each
        teacher, the same trunk-frozen, RGB alone, late fusion with each teacher's student.
    """
    first = next(iter(compares.values()))
    m, w = modality.upper(), "ImageNet" if weights == "imagenet" else "random-weight"
    rgb = f"the RGB detector's trunk: {w} AlexNet fine-tuned on RGB"

    def row(source: Mapping[str, Any], key: str, label: str) -> dict[str, Any]:
        return {**source["rows"][key], "label": label}

    rows: dict[str, dict[str, Any]] = {}
    for frozen in ("", "-frozen"):
        suffix = ", trunk frozen" if frozen else ""
        rows[f"no-init{frozen}"] = row(first, f"no-init{frozen}", f"{m}: no init (random trunk){suffix}")
        rows[f"copy-rgb{frozen}"] = row(first, f"copy-rgb{frozen}", f"{m}: copy from RGB ({rgb}){suffix}")
        for t, c in compares.items():
            rows[f"transfer-{t}{frozen}"] = row(c, f"transfer{frozen}", f"{m}: supervision transfer from {w} "
                                                f"{teacher_labels[t]}{suffix}")
    rows["rgb"] = row(first, "rgb", f"RGB alone ({w} AlexNet, fine-tuned)")
    for t, c in compares.items():
        rows[f"fusion-{t}"] = row(c, "fusion", f"RGB + {m} (late fusion; {m} from {teacher_labels[t]})")
    split = first["test_split"] if first["test_split"] == evaluation else f"{evaluation} {first['test_split']}"
    return {"modality": first["modality"], "test_split": split, "seeds": first["seeds"], "profile": profile,
            "rows": rows}


def mean_table(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Each row's AP averaged over evaluations (JHMDB's splits): per class the mean of the per-evaluation means
    over seeds, mAP the mean of the evaluations' mAPs with their spread (n = evaluations)."""
    from student_trainer.compare import seed_stats

    first = next(iter(tables.values()))
    rows = {}
    for key, r in first["rows"].items():
        per_eval = [t["rows"][key] for t in tables.values()]
        runs = []
        for row in per_eval:
            classes = list(row["runs"][0]["ap"])
            runs.append({"ap": {c: (float(np.mean(v)) if (v := [x["ap"][c] for x in row["runs"]
                                                                 if x["ap"].get(c) is not None]) else None)
                                for c in classes}})
        rows[key] = {"label": r["label"], "mAP": seed_stats([row["mAP"]["mean"] for row in per_eval]), "runs": runs}
    split = first["test_split"].removeprefix(f"{next(iter(tables))} ")
    return {**first, "test_split": f"{split}, mean over {', '.join(tables)}", "rows": rows}


def table_markdown(table: Mapping[str, Any]) -> str:
    """The table in the comparison's Markdown form."""
    from student_trainer.compare import comparison_markdown

    return comparison_markdown(dict(table))


def _results(table: Mapping[str, Any]) -> dict[str, Any]:
    return {key: {"label": r["label"], **r["mAP"]} for key, r in table["rows"].items()}


def recipe_report(report_dir: Path, title: str, intro: Sequence[str], sections: Sequence[str],
                  tables: Mapping[str, Mapping[str, Any]], mean: Mapping[str, Any] | None,
                  timings: Mapping[str, Mapping[str, float]], extra: Mapping[str, Any]) -> Path:
    """Write ``report.md`` and ``results.json`` (each table's rows: label, mAP mean / std / n) into ``report_dir``.

    Args:
        title: the first heading.
        intro: lines before the tables (settings, seeds, data, stores, students).
        sections: Markdown after the tables (notes on the rows).
        tables: ``{evaluation: table}`` (:func:`merged_table`), in report order.
        mean: the mean over evaluations (:func:`mean_table`) or None.
        timings: the stage times (``timings.json``).
        extra: more JSON for ``results.json`` (settings, seeds, stage times).
    """
    from xmodal_pipeline.report import timings_markdown

    report_dir.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}\n", *intro]
    parts += ["\n" + table_markdown(t) for t in tables.values()]
    if mean is not None:
        parts.append("\n" + table_markdown(mean) + "\n(± over the evaluations' mAPs)\n")
    parts += [*sections, timings_markdown(dict(timings))]
    path = report_dir / "report.md"
    results = {"tables": {k: _results(t) for k, t in tables.items()},
               "mean": _results(mean) if mean is not None else None, **extra}
    write_json_atomic(report_dir / "results.json", json.loads(json.dumps(results)))
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path
