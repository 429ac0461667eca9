"""Fixtures of the chat tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def carol(transactional_db: None) -> Any:
    from tests.support.users import make_user

    return make_user("carol")
