"""``user_timezone`` names a zone, the same one on every host.

A system's zone directory holds files beside the zones (``localtime``, the server's own
zone; ``posixrules``; the ``posix/`` and ``right/`` copies) that ``ZoneInfo`` loads there
but not where only the ``tzdata`` package is installed: they are refused everywhere.
"""

from __future__ import annotations

import pytest

from ctx_memory import ContextManager
from ctx_memory.assembly.sources import format_header
from ctx_memory.errors import ValidationError
from ctx_memory.schema import check_time_zone, time_zone

NOT_ZONES = ["localtime", "posixrules", "posix/Europe/Paris", "right/UTC", "right/Asia/Tokyo"]


@pytest.mark.parametrize("name", NOT_ZONES)
def test_zone_directory_files_are_not_zones(name: str) -> None:
    assert time_zone(name) is None
    with pytest.raises(ValidationError, match="unknown time zone"):
        check_time_zone(name, "metadata.user_timezone")
    manager = ContextManager()
    with pytest.raises(ValidationError, match="user_timezone"):
        manager.update_metadata("s", user_timezone=name)
    assert format_header({"user_timezone": name}) == ""  # one stored before: ignored


@pytest.mark.parametrize("name", ["Europe/Paris", "UTC", "Asia/Kathmandu", "Etc/GMT+5"])
def test_zones_are_zones(name: str) -> None:
    assert time_zone(name) is not None
    check_time_zone(name, "metadata.user_timezone")
