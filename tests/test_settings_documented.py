"""What the README lists is what the code declares: every setting under its environment
variable, the error table as `python -m service.errors` prints it, every metric and stage."""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

from service import metrics
from service.config import Settings
from service.errors import error_table
from tests.conftest import REPO

README = REPO / "README.md"


def section(title: str, next_title: str) -> str:
    readme = README.read_text()
    return readme[readme.index(title):readme.index(next_title)]


def test_every_setting_is_in_the_readme() -> None:
    configuration = section("## Configuration", "## Performance")
    missing = [name for name in Settings.model_fields
               if f"`{name.upper()}`" not in configuration]
    assert not missing, missing


def test_the_readme_error_table_is_the_declared_one() -> None:
    block = section("<!-- errors: begin -->", "<!-- errors: end -->")
    assert block.removeprefix("<!-- errors: begin -->").strip() == error_table(), (
        "run `python -m service.errors` and paste its table into the README")


def test_every_metric_and_stage_is_in_the_readme() -> None:
    readme, operating = README.read_text(), section("## Operating it", "## Configuration")
    families = {family.name for collector in list(REGISTRY._collector_to_names)
                for family in collector.collect() if family.name.startswith("facepose_")}
    # Counters and infos are collected without their _total and _info suffixes.
    named = set(re.findall(r"`(facepose_[a-z_]+)", readme))
    missing = sorted(name for name in families
                     if not {name, f"{name}_total", f"{name}_info"} & named)
    assert not missing, missing
    stages = re.search(r"facepose_stage_duration_seconds\{stage\}`\s*\(([^)]*)\)", operating)
    assert stages is not None
    assert [s.strip() for s in stages.group(1).split(",")] == list(metrics.STAGES)


def test_every_stage_timed_is_declared() -> None:
    timed = {match for path in (REPO / "service").rglob("*.py")
             for match in re.findall(r'STAGE_SECONDS\.labels\("([a-z_]+)"\)', path.read_text())}
    assert timed == set(metrics.STAGES)
