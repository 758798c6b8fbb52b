"""A short soak in CI: mixed requests, no 5xx, replicas' memory steady after warm-up.

`python -m benchmarks.soak` is the long run behind the figures in docs/RELIABILITY.md.
"""

import asyncio

import ray

from benchmarks.soak import APP, mixed_calls, replica_rss, run_calls

WARMUP, REQUESTS, CONCURRENCY = 40, 120, 4


def test_mixed_requests_get_no_5xx_and_replica_memory_holds_steady(base_url):
    gcs_address = ray.get_runtime_context().gcs_address
    asyncio.run(run_calls(base_url, mixed_calls(WARMUP, seed=10), CONCURRENCY))
    before = replica_rss(APP, gcs_address)
    outcomes = asyncio.run(run_calls(base_url, mixed_calls(REQUESTS, seed=11), CONCURRENCY))
    after = replica_rss(APP, gcs_address)

    statuses = [status for _, status, _ in outcomes]
    assert len(statuses) == REQUESTS
    assert not [status for status in statuses if status >= 500 or status == 0], statuses
    assert {status for kind, status, _ in outcomes if kind != "bad"} == {200}
    assert {"Ingress", "FaceAligner", "Cartoonizer", "Postprocessor"} <= {name.split()[0] for name in before}
    assert set(before) <= set(after), "a replica died during the soak"
    changes = {name: (after[name] - before[name]) / before[name] for name in before}
    assert all(abs(change) <= 0.10 for change in changes.values()), changes
