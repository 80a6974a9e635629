"""The cache's list order: every job and each key's, newest first, from a cursor on."""

from __future__ import annotations

from asyncjobs.api.job_order import NewestFirst, position
from asyncjobs.core.jobs import JobView, Phase


def view(job_id: str, second: int, key: str | None) -> JobView:
    return JobView(
        job_id=job_id,
        uid="",
        request_type="chat_completion",
        phase=Phase.PENDING,
        created_at=f"2026-12-01T03:00:{second:02d}.000Z",
        virtual_key_id=key,
    )


A1, A2, B3, N4, A4 = (
    view("a1", 1, "a"),
    view("a2", 2, "a"),
    view("b3", 3, "b"),
    view("n4", 4, None),
    view("a4", 4, "a"),
)


def test_jobs_come_newest_first_by_time_then_id_for_everyone_and_per_key() -> None:
    order = NewestFirst()
    order.replace([B3, A1, N4, A4, A2])
    assert list(order.ids(None, None)) == ["n4", "a4", "b3", "a2", "a1"]
    assert list(order.ids("a", None)) == ["a4", "a2", "a1"]
    assert list(order.ids("b", None)) == ["b3"]
    assert list(order.ids("nobody", None)) == []


def test_a_cursor_position_starts_the_page_after_it() -> None:
    order = NewestFirst()
    order.replace([A1, A2, B3, N4, A4])
    assert list(order.ids(None, position(A4))) == ["b3", "a2", "a1"]
    assert list(order.ids("a", position(B3))) == ["a2", "a1"]
    assert list(order.ids("a", position(A1))) == []


def test_added_and_removed_jobs_keep_the_order() -> None:
    order = NewestFirst()
    for job in (A4, A1, N4, A2):  # out of creation order, as watch events may come
        order.add(job)
    assert list(order.ids(None, None)) == ["n4", "a4", "a2", "a1"]
    order.remove(A4)
    order.remove(B3)  # never added: nothing happens
    assert list(order.ids("a", None)) == ["a2", "a1"]
    order.remove(A2)
    order.remove(A1)
    assert list(order.ids("a", None)) == []
    assert len(order) == 1
