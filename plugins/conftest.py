"""Let the plugin tests run from a source checkout too: a plugin that is not pip-installed is
imported from its ``src/`` folder. Installed plugins (the real check) are used as installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent

for _package, _folder in (
    ("pressured_policy_template", "pressured-policy-template"),
    ("pressured_policy_growth", "pressured-policy-growth"),
):
    if importlib.util.find_spec(_package) is None:
        sys.path.insert(0, str(_HERE / _folder / "src"))
