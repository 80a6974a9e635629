"""Turns watch events into work: one task per job that needs running, expiry for the rest.

The job watch (job_watch.py) delivers every AsyncJob event of this replica's shards
here (each listing included, so a restarted operator sees every job again). A job with
a task of ours is left alone; otherwise the lifecycle decides from the object alone:
run it (Pending), resume it (Processing with no task here means an operator stopped
during a call: its stored result, if any, is used first), fail it (deadline), or
schedule its deletion (terminal). Phases only move
forward, so an event older than a terminal status this process wrote is recognised and
ignored.

With several operator replicas (members.py) only the jobs of this replica's shards are
looked at (an event from before a reshard is dropped), a Processing job whose latest
attempt was made by another live member is left to it, and a task whose job's shard
moved away stops before its claim (writer.NotOwned); one that already claimed runs to
the end, since the claim recorded this process and no one else resumes it meanwhile.

A cancel (core/cancel.py) is acted on by the replica that runs the job, or for a job
with no task by the shard's owner: a running task is cancelled, which abandons its
provider call (the connection is closed), and the cancelled status is written at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from asyncjobs.controller.backlog import Backlog
from asyncjobs.controller.executor import Context, JobRun
from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.members import Ownership
from asyncjobs.controller.usage_folder import UsageFolder
from asyncjobs.controller.writer import Conflict, NotOwned, slim
from asyncjobs.core import cancel, fair_share, lifecycle, resources, shards
from asyncjobs.core.jobs import Phase
from asyncjobs.core.kube import KubeError
from asyncjobs.core.lifecycle import Delete, ExpireAt, Job, Resume, Run, WriteStatus
from asyncjobs.core.model import AsyncJob, as_asyncjob, phase_of
from asyncjobs.core.payloads import PayloadStoreError

log = logging.getLogger(__name__)

# Started jobs per provider at most (or twice the calls allowed in flight, if more);
# more pending ones wait parked (backlog.py).
STARTED_PER_PROVIDER = 500

# After an unexpected error a job is looked at again after this long (its deadline
# still bounds it, so it cannot loop forever).
_RETRY_AFTER_ERROR = 5.0
# Pauses between tries to delete a deleted job's bodies from an object store.
_BODY_DELETE_RETRIES = (1.0, 5.0, 30.0)


class Supervisor:
    def __init__(
        self,
        ctx: Context,
        expiry: Expiry,
        health: WatchHealth,
        ownership: Ownership | None = None,
        *,
        usage: UsageFolder | None = None,
        per_lane: Callable[[], int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.expiry = expiry
        # Folds a virtual key's job's usage into its key's record before expiry deletes it.
        self.usage = usage
        self.health = health
        self.ownership = ownership or Ownership.alone()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Jobs whose task is being cancelled on request (core/cancel.py).
        self.cancelling: set[str] = set()
        self.terminal: set[str] = set()
        # The shard of every job with a task, parked or awaiting expiry here.
        self.shard_of: dict[str, int] = {}
        self.deletions: set[asyncio.Task[None]] = set()
        # Pending jobs past what admission needs wait here, compactly (backlog.py); each
        # started task counts against its provider's lane until it ends.
        budget = ctx.admission.budget
        self.backlog = Backlog(
            per_lane or (lambda: started_per_provider(STARTED_PER_PROVIDER, budget.max_in_flight))
        )
        self._lane_of: dict[str, str] = {}
        # A parked job still fails at its deadline: a timer starts it then.
        self._deadline_timers: dict[str, asyncio.TimerHandle] = {}
        # Until the first listing is over, no call starts and new jobs are parked.
        self._listing = True
        # Once closing, no parked job starts (its task would outlive close()).
        self._closing = False
        ctx.admission.paused = True

    def waiting(self) -> int:
        """Jobs waiting for a call slot: started and queued, or parked."""
        return self.ctx.admission.waiting() + len(self.backlog)

    def waiting_by_group(self) -> dict[str, int]:
        counts = dict(self.ctx.admission.waiting_by_group())
        for group, parked in self.backlog.waiting_by_group().items():
            counts[group] = counts.get(group, 0) + parked
        return counts

    def listed(self, names: Iterable[str]) -> None:
        """A whole listing of this replica's shards has been observed (job_watch.py).

        A job of ours that it did not hold was deleted while no watch was open: it is
        forgotten (its task, if any, stopped). Jobs of shards that moved away are not
        in it either; they are left to finish as they would be after a reshard. The
        first listing opens admission, so the oldest of a backlog start first rather
        than the first ones listed (by name)."""
        if self._closing:
            return
        present = set(names)
        gone = [
            name
            for name, shard in self.shard_of.items()
            if name not in present and self.ownership.owns(shard)
        ]
        for name in gone:
            log.info("job %s: not in the fresh listing (deleted meanwhile); forgotten", name)
            self._forget(name)
        # The by-phase gauge counts exactly the jobs listed: not those deleted meanwhile,
        # nor those of shards that moved away (their DELETED events no longer come here).
        self.ctx.metrics.phases.keep_only(present)
        if self._listing:
            self._listing = False
            log.info("seen all %d listed jobs; starting calls", len(present))
            # Pending jobs were parked while listing: the first ones started now are the
            # ones fair share puts first (the oldest of each key), not the first listed.
            for lane in self.backlog.lanes():
                self._feed(lane)
            # Their tasks have not run yet; resuming after them lets every one join the
            # queue before the first slot is granted.
            asyncio.get_running_loop().call_soon(self.ctx.admission.resume)

    @property
    def wall(self) -> Callable[[], datetime]:
        return self.ctx.wall

    def reshard(self, ownership: Ownership) -> None:
        """The live members changed: jobs awaiting expiry in shards that moved away are
        the new owner's (its fresh listing schedules them); tasks are left to finish or
        to stop at their claim."""
        self.ownership = ownership
        for name, shard in list(self.shard_of.items()):
            if not ownership.owns(shard) and name not in self.tasks:
                self._unpark(name)
                self.terminal.discard(name)
                self.expiry.forget(name)
                if self.usage is not None:
                    self.usage.forget(name)
                del self.shard_of[name]

    def may_claim(self, name: str) -> bool:
        """Whether a task of ours may still claim this job (writer.JobWriter asks)."""
        shard = self.shard_of.get(name)
        return shard is not None and self.ownership.owns(shard)

    def _ours(self, obj: AsyncJob, job: Job, step: object) -> bool:
        """Whether this replica handles the job now: its shard is ours, and if it is a
        Processing job to resume, no other live member made its latest attempt."""
        if not self.ownership.owns(shards.job_shard(job.name, obj["metadata"].get("labels"))):
            return False
        if job.phase is Phase.PROCESSING:
            # Resumed or cancelled: either is for the member that made the latest attempt.
            claimer = str((obj.get("status") or {}).get("operator", ""))
            if not self.ownership.may_resume(claimer):
                log.debug("job %s: run by the live member %s; left to it", job.name, claimer)
                return False
        return True

    def observe(self, event_type: str | None, raw: Mapping[str, Any]) -> None:
        """Handles one watch event; never blocks and never raises for one bad object."""
        metadata = raw.get("metadata") or {}
        name = metadata.get("name", "")
        self.health.observed(name, metadata.get("resourceVersion", ""))
        self.ctx.metrics.last_watch_event.set_to_current_time()
        if event_type == "DELETED":
            self.ctx.metrics.phases.forget(name)
            self._forget(name)
            if name and not self.ctx.payloads.deleted_with_job and self._was_ours(metadata):
                self._start_body_deletion(name, metadata.get("uid", ""))
            return
        if not name:
            return
        obj = slim(as_asyncjob(raw))
        phase = phase_of(obj)
        self.ctx.metrics.phases.seen(name, phase)
        running = self.tasks.get(name)
        if running is not None:
            if (
                name not in self.cancelling
                and not Phase(phase).terminal
                and cancel.requested(obj["metadata"])
            ):
                self._cancel_running(name, running)
            return
        if self.backlog.holds(name, obj["metadata"].get("resourceVersion", "")):
            return  # parked as it is (a relist): it keeps its place
        # A newer object of a parked job is decided again below.
        was_parked = self._unpark(name)
        try:
            job = Job.from_object(obj, self.ctx.policy)
        except (KeyError, ValueError, TypeError) as error:
            log.warning("job %s cannot be read (%s); ignored", name, type(error).__name__)
            return
        if name in self.terminal and not job.phase.terminal:
            return  # an event from before our own terminal write
        step = lifecycle.observed(job, self.wall())
        if not self._ours(obj, job, step):
            if was_parked:
                self.shard_of.pop(name, None)
            return
        lane = _lane(job)
        if isinstance(step, ExpireAt | Delete):
            self._schedule_expiry(name, job, step, obj)
        elif isinstance(step, Run) and (
            self._listing or not self.backlog.room(lane) or self.backlog.has_parked(lane)
        ):
            # Behind the jobs parked before it, in fair-share order; while listing,
            # every new job is parked: which start first is decided once all are known.
            self._park(name, obj, job)
            self._feed(lane)
        else:
            self._start(name, obj, step, lane)

    def _park(self, name: str, obj: AsyncJob, job: Job) -> None:
        spec = obj["spec"]
        self.shard_of[name] = shards.job_shard(name, obj["metadata"].get("labels"))
        self.backlog.park(
            name,
            dict(obj),
            _lane(job),
            fair_share.group_of(spec),
            fair_share.weight_of(spec),
            fair_share.order_of(spec, job.submitted_at, name),
        )
        loop = asyncio.get_running_loop()
        left = (job.deadline - self.wall()).total_seconds()
        self._deadline_timers[name] = loop.call_later(
            max(0.0, left), self._deadline_of_parked, name
        )

    def _unpark(self, name: str) -> bool:
        if not self.backlog.unpark(name):
            return False
        self._cancel_deadline_timer(name)
        return True

    def _cancel_deadline_timer(self, name: str) -> None:
        timer = self._deadline_timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _deadline_of_parked(self, name: str) -> None:
        """A parked job's deadline came: it starts whatever its lane's count, and its
        task writes the failure at once."""
        self._deadline_timers.pop(name, None)
        obj = None if self._closing else self.backlog.take(name)
        if obj is not None:
            self._start_parked(name, obj)

    def _feed(self, lane: str) -> None:
        """Starts parked jobs of `lane` while it has room (not before the first listing
        is over: listed() starts the first ones, in order; not once closing)."""
        if self._listing or self._closing:
            return
        while (obj := self.backlog.next(lane)) is not None:
            self._start_parked(obj["metadata"]["name"], obj)

    def _start_parked(self, name: str, raw: dict[str, Any]) -> None:
        self._cancel_deadline_timer(name)
        obj = as_asyncjob(raw)
        job = Job.from_object(obj, self.ctx.policy)  # it was read before it was parked
        step = lifecycle.observed(job, self.wall())
        if isinstance(step, ExpireAt | Delete):
            self._schedule_expiry(name, job, step, obj)
        else:
            self._start(name, obj, step, _lane(job))

    def _was_ours(self, metadata: Mapping[str, Any]) -> bool:
        """Whether this replica looks after the bodies of a job reported DELETED: the
        event carries the job as it last matched this replica's selector, labels
        included, so only the owner of its shard deletes them."""
        shard = shards.labelled_shard(metadata.get("labels"))
        return shard is not None and self.ownership.owns(shard)

    def _start(self, name: str, obj: AsyncJob, step: Run | Resume | WriteStatus, lane: str) -> None:
        self.shard_of[name] = shards.job_shard(name, obj["metadata"].get("labels"))
        self._lane_of[name] = lane
        self.backlog.started(lane)
        task = asyncio.create_task(self._supervise(obj, step), name=f"job {name}")
        self.tasks[name] = task
        task.add_done_callback(lambda _: self._task_done(name, task))

    def _cancel_running(self, name: str, running: asyncio.Task[None]) -> None:
        """Cancels the task running a job whose cancel was asked for (its provider call,
        if any, is abandoned) and, in a task of its own, writes the cancelled status
        once the old task has ended."""
        self.cancelling.add(name)
        running.cancel()
        task = asyncio.create_task(self._after_cancel(name, running), name=f"cancel {name}")
        self.tasks[name] = task

        def done(_: object) -> None:
            self.cancelling.discard(name)
            self._task_done(name, task)

        task.add_done_callback(done)

    async def _after_cancel(self, name: str, running: asyncio.Task[None]) -> None:
        await asyncio.wait([running])
        log.info("job %s: cancelled on request", name)
        fresh = await self._refetch(name)
        if fresh is None:
            return
        job = Job.from_object(fresh, self.ctx.policy)
        step = lifecycle.observed(job, self.wall())
        if isinstance(step, ExpireAt | Delete):
            # The job ended before its task stopped (its terminal status was written).
            self._schedule_expiry(name, job, step, fresh)
        else:
            # Cancelled (or, were the annotation taken back meanwhile, run on).
            await self._supervise(fresh, step)

    def _task_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(name) is task:
            del self.tasks[name]
            self._task_ended(name)
            shard = self.shard_of.get(name)
            if shard is not None and not self.ownership.owns(shard):
                # Its shard moved away while it ran: the watch no longer shows the job,
                # so the liveness check must not wait for the echo of our last write.
                self.health.forget(name)
            if name not in self.terminal:
                self.shard_of.pop(name, None)

    async def _supervise(self, obj: AsyncJob, step: Run | Resume | WriteStatus) -> None:
        name = obj["metadata"]["name"]
        while True:
            run = JobRun(self.ctx, obj)
            try:
                if isinstance(step, WriteStatus):
                    written = await run.finish(step)
                else:
                    written = await run.run(step)
                if written is not None:
                    self._terminal_written(written)
                return
            except NotOwned:
                log.info("job %s: its shard moved to another member; left to it", name)
                return
            except Conflict:
                log.info("job %s changed while being claimed; looking again", name)
            except (KubeError, OSError, PayloadStoreError) as error:
                log.warning("job %s: store error (%s); retrying", name, error)
                await asyncio.sleep(_RETRY_AFTER_ERROR)
            except Exception as error:
                # A bug must not strand the job: log it briefly (no body content can be
                # in it) and look at the job again; its deadline still ends it.
                log.error("job %s: unexpected %s: %s", name, type(error).__name__, error)
                await asyncio.sleep(_RETRY_AFTER_ERROR)
            fresh = await self._refetch(name)
            if fresh is None:
                return
            obj = fresh
            job = Job.from_object(obj, self.ctx.policy)
            next_step = lifecycle.observed(job, self.wall())
            if not self._ours(obj, job, next_step):
                return  # claimed by another member meanwhile, or its shard moved
            if isinstance(next_step, ExpireAt | Delete):
                self._schedule_expiry(name, job, next_step, obj)
                return
            step = next_step

    def _start_body_deletion(self, name: str, uid: str) -> None:
        task = asyncio.create_task(self._delete_bodies(name, uid), name=f"bodies of {name}")
        self.deletions.add(task)
        task.add_done_callback(self.deletions.discard)

    async def _delete_bodies(self, name: str, uid: str) -> None:
        """Removes a deleted job's bodies from the object store, a few times if need be;
        what is still left then is for the bucket's lifecycle rule.

        The watch selects by shard label, so a job whose label was removed or changed
        (kubectl) is reported DELETED too, with the labels it had: only a GET tells a
        deletion from a job that left the selector and will be labelled again."""
        for delay in (*_BODY_DELETE_RETRIES, None):
            try:
                if await self._still_exists(name, uid):
                    log.info("job %s left this replica's selector but exists; bodies kept", name)
                    return
                await self.ctx.payloads.delete_job(name)
            except (PayloadStoreError, KubeError) as error:
                if delay is None:
                    log.warning("job %s: its bodies were not deleted (%s)", name, error)
                    self.ctx.metrics.bodies_deleted.labels("failed").inc()
                    return
                await asyncio.sleep(delay)
            else:
                self.ctx.metrics.bodies_deleted.labels("deleted").inc()
                return

    async def _still_exists(self, name: str, uid: str) -> bool:
        try:
            current = await self.ctx.client.get(resources.asyncjobs_path(self.ctx.namespace, name))
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return bool(uid) and current.get("metadata", {}).get("uid") == uid

    def _schedule_expiry(self, name: str, job: Job, step: ExpireAt | Delete, obj: AsyncJob) -> None:
        shard = shards.job_shard(name, obj["metadata"].get("labels"))
        if not self.ownership.owns(shard):
            return  # the shard's owner deletes it
        self.shard_of[name] = shard
        self.terminal.add(name)
        if self.usage is not None:
            self.usage.remember(obj)
        at = step.at if isinstance(step, ExpireAt) else self.wall()
        self.expiry.schedule(name, job.uid, at)

    async def _refetch(self, name: str) -> AsyncJob | None:
        path = resources.asyncjobs_path(self.ctx.namespace, name)
        while True:
            try:
                return slim(as_asyncjob(await self.ctx.client.get(path)))
            except KubeError as error:
                if error.status == 404:
                    return None
                await asyncio.sleep(_RETRY_AFTER_ERROR)

    def _terminal_written(self, obj: AsyncJob) -> None:
        name = obj["metadata"]["name"]
        job = Job.from_object(obj, self.ctx.policy)
        step = lifecycle.observed(job, self.wall())
        if isinstance(step, ExpireAt | Delete):
            self._schedule_expiry(name, job, step, obj)

    def _forget(self, name: str) -> None:
        self.shard_of.pop(name, None)
        self.terminal.discard(name)
        self.expiry.forget(name)
        if self.usage is not None:
            self.usage.forget(name)
        self.health.forget(name)
        self._unpark(name)
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
            self._task_ended(name)

    def _task_ended(self, name: str) -> None:
        """The job's task is over (or dropped): its lane may start a parked job."""
        lane = self._lane_of.pop(name, None)
        if lane is not None:
            self.backlog.ended(lane)
            self._feed(lane)

    async def close(self) -> None:
        self._closing = True
        for timer in self._deadline_timers.values():
            timer.cancel()
        self._deadline_timers.clear()
        tasks = [*self.tasks.values(), *self.deletions]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _lane(job: Job) -> str:
    """The provider a job's start counts against: its first target's."""
    return job.targets[0].provider if job.targets else ""


def started_per_provider(configured: int, max_in_flight: int) -> int:
    """How many jobs of one provider run as tasks at once: the configured number, but
    at least twice the calls allowed in flight, so that no free slot waits for a parked
    job to be started."""
    return max(configured, 2 * max_in_flight)
