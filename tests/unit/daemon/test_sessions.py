"""Session bookkeeping and the policy-source digest recorded in the trail."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.daemon.protocol import NOT_FOUND, RequestError
from guard.daemon.sessions import SessionTable, short_id, sources_hash


def test_sources_hash_changes_with_content_and_not_with_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("one")
    b.write_text("two")
    first = sources_hash([a, b])
    assert first == sources_hash([b, a])
    assert first.startswith("sha256:")
    b.write_text("two!")
    assert sources_hash([a, b]) != first


def test_sources_hash_of_a_vanished_file_differs_from_an_empty_one(tmp_path: Path) -> None:
    gone = tmp_path / "gone.yaml"
    empty = tmp_path / "gone.yaml"
    missing = sources_hash([gone])
    empty.write_text("")
    assert sources_hash([empty]) != missing


def test_short_ids_avoid_taken_ones() -> None:
    taken = {short_id(set()) for _ in range(50)}
    assert all(len(x) == 10 for x in taken)
    assert short_id(taken) not in taken


def test_unknown_session_is_not_found() -> None:
    with pytest.raises(RequestError) as info:
        SessionTable().get("nope")
    assert info.value.code == NOT_FOUND and "'session'" in info.value.message
