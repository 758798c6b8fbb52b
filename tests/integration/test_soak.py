"""A short soak in CI: mixed requests, no 5xx, replicas' memory steady after warm-up.

The warm-up is the very mix that is then measured, sent twice: a replica's allocator
grows to the largest image it has seen, and a short run with other sizes would measure
that rather than a leak. The same mix sent twice more must then not grow memory past
the level the deployment's replicas reached in the warm-up, nor keep growing through
both sends.
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
    outcomes = asyncio.run(run_calls(base_url, mix, CONCURRENCY))
    middle = replica_rss(APP, gcs_address)
    outcomes += asyncio.run(run_calls(base_url, mix * (REPEATS - 1), CONCURRENCY))
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
    # A replica that took little of the warm-up (routing favours the replica that loaded
    # the model first) grows towards its siblings' level when it first meets the larger
    # batches: that is warm-up, not a leak. So a replica may grow up to the highest level
    # any replica of its deployment had after the warm-up, and 10% beyond it; and none
    # may grow by more than 5% in each half of the soak, as a leak does and a catch-up,
    # which stops, does not.
    deployment_level: dict[str, int] = {}
    for name, rss in before.items():
        deployment = name.split()[0]
        deployment_level[deployment] = max(deployment_level.get(deployment, 0), rss)
    past_level = {
        name: f"{after[name] / deployment_level[name.split()[0]] - 1:+.1%} of the level"
        for name in before
        if name in after and after[name] > 1.10 * deployment_level[name.split()[0]]
    }
    assert not past_level, f"RSS grew more than 10% past its deployment's warmed-up level: {past_level}"
    growing = {
        name: f"{middle[name] / before[name] - 1:+.1%}, then {after[name] / middle[name] - 1:+.1%}"
        for name in before
        if name in middle and name in after
        and middle[name] > 1.05 * before[name] and after[name] > middle[name] + 0.05 * before[name]
    }
    assert not growing, f"RSS kept growing through the soak: {growing}"
