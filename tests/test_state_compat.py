"""State files written by the previous version (9552e4b, before the redesign of issue 12) are
read unchanged: each is loaded into the typed state and saved again, and the file that comes
out is the file that went in, byte for byte.

`data/state-v1/` holds real files that version wrote against the lab: a committed renewal,
an order waiting at SCM, an import whose commit failed, and a declined order.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from connector.results import Action
from connector.state import Stage, StateStore

DATA = os.path.join(os.path.dirname(__file__), "data", "state-v1")
# One directory per situation, holding the one state file of its certificate profile.
SITUATIONS = sorted(os.listdir(DATA))


def only_file(situation: str) -> str:
    (name,) = [n for n in os.listdir(os.path.join(DATA, situation)) if n.endswith(".json")]
    return name


@pytest.mark.parametrize("situation", SITUATIONS)
def test_a_state_file_of_the_previous_version_round_trips_unchanged(tmp_path: Any,
                                                                     situation: str) -> None:
    name = only_file(situation)
    original = os.path.join(DATA, situation, name)
    shutil.copy(original, tmp_path / name)
    store = StateStore(str(tmp_path))
    state = store.load(name[:-len(".json")])
    assert state.pending is None or isinstance(state.pending.stage, Stage)
    store.save(state)
    with open(original, "rb") as old, open(tmp_path / name, "rb") as new:
        assert new.read() == old.read()


def load(situation: str) -> Any:
    return StateStore(os.path.join(DATA, situation)).load(only_file(situation)[:-5])


def test_the_previous_versions_stages_are_read_as_stages() -> None:
    assert SITUATIONS == ["committed", "installed", "ordered", "rejected"]
    ordered, installed = load("ordered"), load("installed")
    assert ordered.pending is not None and ordered.pending.stage is Stage.ORDERED
    assert ordered.pending.kind is Action.RENEW and ordered.pending.order_id
    assert installed.pending is not None and installed.pending.stage is Stage.INSTALLED
    assert load("rejected").rejected is not None
    assert load("committed").cert_id and load("committed").pending is None
