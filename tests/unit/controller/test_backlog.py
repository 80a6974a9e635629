"""The backlog alone: a lane starts at most `per_lane` jobs; parked jobs come back in the
order fair share would serve them (by key weight, then priority and age); a job that
changed or went away is dropped from its place."""

from __future__ import annotations

from typing import Any

from asyncjobs.controller.backlog import Backlog


def job(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"model": "openai/gpt-4o"}}


def names(backlog: Backlog, lane: str) -> list[str]:
    taken: list[str] = []
    while (obj := backlog.next(lane)) is not None:
        taken.append(obj["metadata"]["name"])
        backlog.started(lane)
    return taken


def test_a_lane_starts_at_most_its_room_and_each_end_frees_one() -> None:
    backlog = Backlog(lambda: 2)
    for i in range(4):
        backlog.park(f"j{i}", job(f"j{i}"), "openai", "", 1, (0, float(i), f"j{i}"))
    assert len(backlog) == 4
    assert names(backlog, "openai") == ["j0", "j1"]
    assert backlog.next("openai") is None
    assert names(backlog, "anthropic") == [], "another lane has nothing parked"
    backlog.ended("openai")
    assert names(backlog, "openai") == ["j2"]
    assert len(backlog) == 1
    assert "j3" in backlog


def test_parked_jobs_come_back_by_weight_then_priority_and_age() -> None:
    backlog = Backlog(lambda: 100)
    for i in range(4):
        backlog.park(f"a{i}", job(f"a{i}"), "openai", "key-a", 1, (0, float(i), f"a{i}"))
    backlog.park("b0", job("b0"), "openai", "key-b", 1, (0, 10.0, "b0"))
    backlog.park("b1", job("b1"), "openai", "key-b", 1, (-5, 11.0, "b1"))  # priority 5
    # Equal weights: the keys alternate, whatever their backlogs; b's priority job first.
    assert names(backlog, "openai") == ["a0", "b1", "a1", "b0", "a2", "a3"]


def test_an_unparked_job_loses_its_place_and_its_body_at_once() -> None:
    backlog = Backlog(lambda: 100)
    backlog.park("j0", job("j0"), "openai", "", 1, (0, 0.0, "j0"))
    backlog.park("j1", job("j1"), "openai", "", 1, (0, 1.0, "j1"))
    assert backlog.unpark("j0")
    assert not backlog.unpark("j0")
    assert names(backlog, "openai") == ["j1"]


def test_a_parked_job_is_taken_whatever_its_lanes_room() -> None:
    backlog = Backlog(lambda: 0)
    backlog.park("j0", job("j0"), "openai", "", 1, (0, 0.0, "j0"))
    assert backlog.next("openai") is None
    taken = backlog.take("j0")
    assert taken is not None
    assert taken["metadata"]["name"] == "j0"
    assert backlog.take("j0") is None
    assert len(backlog) == 0
