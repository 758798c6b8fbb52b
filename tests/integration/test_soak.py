"""A short soak in CI: mixed requests, no 5xx, replicas' memory steady after warm-up.

The warm-up is the very mix that is then measured, sent twice: a replica's allocator
grows to the largest image it has seen, and a short run with other sizes would measure
that rather than a leak. The same mix sent twice more must then not grow memory.
`python -m benchmarks.soak` is the long run behind the figures in docs/RELIABILITY.md.
"""

import asyncio

import ray

from benchmarks.soak import APP, mixed_calls, replica_rss, run_calls

MIX, REPEATS, CONCURRENCY = 60, 2, 4
REQUESTS = MIX * REPEATS


def test_mixed_requests_get_no_5xx_and_replica_memory_holds_steady(base_url, serve_config):
    gcs_address = ray.get_runtime_context().gcs_address
    mix = mixed_calls(MIX, seed=11)
    asyncio.run(run_calls(base_url, mix * REPEATS, CONCURRENCY))
    before = replica_rss(APP, gcs_address)
    outcomes = asyncio.run(run_calls(base_url, mix * REPEATS, CONCURRENCY))
    after = replica_rss(APP, gcs_address)

    statuses = [status for _, status, _ in outcomes]
    assert len(statuses) == REQUESTS
    assert not [status for status in statuses if status >= 500 or status == 0], statuses
    assert {status for kind, status, _ in outcomes if kind != "bad"} == {200}
    assert {"Ingress", "FaceAligner", "Cartoonizer", "Postprocessor"} <= {name.split()[0] for name in before}
    # Autoscaled deployments may scale a replica down as the load changes; a replica of a
    # fixed-size one that is gone has died.
    fixed = {d["name"] for d in serve_config["applications"][0]["deployments"]
             if d["autoscaling_config"]["min_replicas"] == d["autoscaling_config"]["max_replicas"]}
    gone = set(before) - set(after)
    assert not {name for name in gone if name.split()[0] in fixed}, f"a replica died during the soak: {gone}"
    changes = {name: (after[name] - before[name]) / before[name] for name in before if name in after}
    grown = {name: f"{change:+.1%}" for name, change in changes.items() if abs(change) > 0.10}
    assert not grown, f"RSS moved more than 10% after warm-up: {grown}"
