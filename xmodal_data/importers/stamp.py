"""A settings stamp per output folder, so a resumed import never mixes files made with other settings.

Importers skip outputs that already exist. That is only safe when the existing files were made with the
same content-shaping settings (crop, resize, flow method, ...): the first run writes them to
``<out_dir>/import.json``; a later run with different settings fails before writing anything.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from shared.atomic import write_json_atomic
from shared.errors import ConfigError

__all__ = ["STAMP_NAME", "check_stamp"]

STAMP_NAME = "import.json"


def check_stamp(out_dir: Path, importer: str, settings: Mapping[str, object]) -> None:
    """Record ``settings`` in ``out_dir``, or check them against the ones recorded by an earlier run.

    Args:
        out_dir: the import's output folder (created if missing).
        importer: importer name, e.g. ``"nyud2"``.
        settings: JSON-serialisable settings that change the content of the output files.

    Raises:
        ConfigError: ``out_dir`` holds outputs of another importer or of other settings (names the keys).
    """
    wanted = {"importer": importer, "settings": json.loads(json.dumps(dict(settings)))}
    path = Path(out_dir) / STAMP_NAME
    if path.is_file():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); delete it only if {out_dir} is disposable") from None
        if found != wanted:
            old = found.get("settings", {}) if isinstance(found, dict) else {}
            diff = sorted(k for k in set(old) | set(wanted["settings"]) if old.get(k) != wanted["settings"].get(k))
            raise ConfigError(
                f"{out_dir} holds outputs of {found.get('importer') if isinstance(found, dict) else found!r} "
                f"with other settings (differ in: {', '.join(diff) or 'importer'}; recorded {old}, asked "
                f"{wanted['settings']}): use another output folder, or delete this one to start over"
            )
        return
    write_json_atomic(path, wanted, sort_keys=True)
