"""Every setting is in the README's configuration list, under its environment variable."""

from __future__ import annotations

from service.config import Settings
from tests.conftest import REPO


def test_every_setting_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    configuration = readme[readme.index("## Configuration"):readme.index("## Performance")]
    missing = [name for name in Settings.model_fields
               if f"`{name.upper()}`" not in configuration]
    assert not missing, missing
