"""The gauges of sharding: how many members this replica sees, how many shards and jobs
are its own. Kept apart from metrics.py; they read the live objects when scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from asyncjobs.controller.member_lease import MemberLease
from asyncjobs.controller.members import Members
from asyncjobs.controller.supervisor import Supervisor


def register_member_metrics(
    registry: CollectorRegistry, lease: MemberLease, members: Members, supervisor: Supervisor
) -> None:
    Gauge(
        "asyncjobs_operator_members",
        "Operator replicas whose member Lease this one judges live, itself included; 0 "
        "while it does not hold its own.",
        registry=registry,
    ).set_function(lambda: len(members.live()) if lease.holding else 0)
    Gauge(
        "asyncjobs_operator_shards_owned",
        "Shards (of 256) whose jobs this replica runs.",
        registry=registry,
    ).set_function(lambda: len(supervisor.ownership.shards))
    Gauge(
        "asyncjobs_operator_jobs_owned",
        "Jobs this replica is responsible for now: running or waiting to run here, or "
        "finished and awaiting expiry here.",
        registry=registry,
    ).set_function(lambda: len(supervisor.tasks.keys() | supervisor.terminal))
