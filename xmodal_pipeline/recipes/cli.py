"""``xmodal-recipe``: the paper's experiments on real data, one subcommand each (NYUD2 Table 1, JHMDB Table 3)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from shared.settings import Command, run_commands
from xmodal_pipeline.recipes.settings import JhmdbRecipeSettings, Nyud2RecipeSettings

__all__ = ["main"]


def _nyud2(s: Nyud2RecipeSettings) -> None:
    from xmodal_pipeline.recipes.nyud2 import run_nyud2

    print(run_nyud2(s).read_text())


def _jhmdb(s: JhmdbRecipeSettings) -> None:
    from xmodal_pipeline.recipes.jhmdb import run_jhmdb

    print(run_jhmdb(s).read_text())


_COMMANDS: dict[str, Command] = {
    "nyud2": (Nyud2RecipeSettings, _nyud2,
              "Table 1: NYUD2 labelled set + raw video -> ImageNet AlexNet / VGG16 teachers on the raw RGB -> HHA "
              "AlexNet students -> Fast R-CNN on MCG proposals -> VOC AP on val and test"),
    "jhmdb": (JhmdbRecipeSettings, _jhmdb,
              "Table 3: UCF101 split-1 train videos + JHMDB splits -> ImageNet teachers on the UCF101 RGB -> flow "
              "AlexNet students -> action detectors per JHMDB split -> AP averaged over the splits"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_commands(
        "xmodal-recipe",
        "The paper's experiments on real data, end to end: import, teachers, feature cache service, students, "
        "detectors, one report. Resumable: rerun the same command to continue; Ctrl-C stops every process it "
        "started. Every flag can also be set by the environment variable named in its help.",
        _COMMANDS, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
