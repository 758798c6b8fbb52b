"""The Ingress's side of a video job: sent to a runner, sent again when it dies, bounded, swept."""

import asyncio
import time
from pathlib import Path

from ray.exceptions import ActorDiedError

from cartoon.errors import VideoTooLongError
from deployments.job_store import JobStore
from deployments.settings import AppArgs
from serve_app.job_dispatch import Dispatcher


class Runners:
    """A stand-in for the VideoJobRunner handle: ``outcomes`` says what each call does."""

    def __init__(self, store: JobStore, outcomes):
        self.store, self.outcomes, self.calls = store, outcomes, []
        self.run = self

    def remote(self, job_id: str, attempt: int):
        self.calls.append((job_id, attempt))
        outcome = self.outcomes(len(self.calls))

        async def answer() -> str:
            if isinstance(outcome, Exception):
                raise outcome
            self.store.update(job_id, state=outcome, finished_at=time.time())
            return outcome

        return answer()


def args(tmp_path, **changes) -> AppArgs:
    return AppArgs(**{"jobs_dir": str(tmp_path), "job_lost_after_s": 30, "job_max_attempts": 3, **changes})


def queued(store: JobStore) -> str:
    job_id = store.create({})
    staged = Path(store.root).parent / f"staged-{job_id}"
    staged.write_bytes(b"upload")
    store.put_input(job_id, staged)
    return job_id


async def settle(dispatcher: Dispatcher) -> None:
    while dispatcher.following:
        await asyncio.gather(*dispatcher.following.values(), return_exceptions=True)


def test_a_job_whose_runner_dies_is_sent_again_and_lost_with_a_reason_after_the_last_attempt(tmp_path):
    store = JobStore(tmp_path, 30)
    runners = Runners(store, lambda call: ActorDiedError())
    job_id = queued(store)

    async def main():
        dispatcher = Dispatcher(store, runners, args(tmp_path))
        dispatcher.send(job_id, 0)
        await settle(dispatcher)

    asyncio.run(main())
    assert runners.calls == [(job_id, 0), (job_id, 1), (job_id, 2)]
    lost = store.read(job_id)
    assert lost["state"] == "lost" and lost["error"]["code"] == "job_lost"
    assert "started 3 times" in lost["error"]["message"] and "runner stopped" in lost["error"]["message"]
    assert not store.has_input(job_id)


def test_a_job_whose_runner_died_once_is_finished_by_the_next(tmp_path):
    store = JobStore(tmp_path, 30)
    runners = Runners(store, lambda call: ActorDiedError() if call == 1 else "done")
    job_id = queued(store)

    async def main():
        dispatcher = Dispatcher(store, runners, args(tmp_path))
        dispatcher.send(job_id, 0)
        await settle(dispatcher)

    asyncio.run(main())
    assert runners.calls == [(job_id, 0), (job_id, 1)]
    assert store.read(job_id)["state"] == "done" and store.read(job_id)["attempt"] == 1


def test_a_job_failed_by_its_input_gets_the_inputs_error_and_is_not_sent_again(tmp_path):
    store = JobStore(tmp_path, 30)
    runners = Runners(store, lambda call: VideoTooLongError("the video lasts 700 s, over the limit of 600 s"))
    job_id = queued(store)

    async def main():
        dispatcher = Dispatcher(store, runners, args(tmp_path))
        dispatcher.send(job_id, 0)
        await settle(dispatcher)

    asyncio.run(main())
    failed = store.read(job_id)
    assert runners.calls == [(job_id, 0)]
    assert failed["state"] == "failed" and failed["error"]["code"] == "video_too_long"


def test_a_silent_job_is_taken_up_by_one_replica_however_many_sweep(tmp_path):
    store = JobStore(tmp_path, lost_after_s=0.1)
    runners = Runners(store, lambda call: "done")
    job_id = queued(store)
    store.update(job_id, state="running")
    time.sleep(0.2)  # its holder (an Ingress and its runner, both gone) beats no more

    async def main():
        replicas = [Dispatcher(store, runners, args(tmp_path, job_lost_after_s=0.1)) for _ in range(3)]
        await asyncio.gather(*(replica.sweep() for replica in replicas))
        for replica in replicas:
            await settle(replica)

    asyncio.run(main())
    assert runners.calls == [(job_id, 1)]
    assert store.read(job_id)["state"] == "done"


def test_finished_jobs_expire_on_the_timer_with_no_request(tmp_path):
    store = JobStore(tmp_path, 30)
    expired, kept = queued(store), queued(store)
    store.update(expired, state="done", finished_at=time.time() - 100)
    store.update(kept, state="failed", finished_at=time.time())

    async def main():
        dispatcher = Dispatcher(store, Runners(store, lambda call: "done"), args(tmp_path, job_lost_after_s=0.1,
                                                                              job_retention_s=50))
        sweeping = asyncio.ensure_future(dispatcher.sweep_forever())
        await asyncio.sleep(0.3)
        sweeping.cancel()

    asyncio.run(main())
    assert store.read(expired) is None
    assert store.read(kept)["state"] == "failed" and not store.has_input(kept)
