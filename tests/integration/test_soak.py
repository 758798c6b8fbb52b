"""A short soak in CI: mixed requests, no 5xx, replicas' memory steady after warm-up.

The warm-up is the very mix that is then measured, sent three times: a replica's allocator
grows to the largest image it has seen, and a short run with other sizes would measure
that rather than a leak. The same mix is then sent three more times, each replica's RSS
read after each send. A leak grows with every request, so a replica fails when it grows
in every send by more than ``STEADY_GROWTH`` of its size. The allocator's high-water
mark grows in steps instead (the first time a larger combination of pieces meets in one
batch; the replica that took little of the warm-up, as routing favours the one that
loaded the model first, catches up with its sibling) and then stops: CI measured
10-14 % above the warmed-up level once, 0-2 % otherwise; so a replica may end at most
``MAX_ABOVE_LEVEL`` above the highest level any replica of its deployment had after the
warm-up. On a CPU with native bf16 the settling takes longer: after a warm-up of two
sends one Cartoonizer still grew +14.2 %, +6.0 %, +3.1 % in a CI run (growth that
halves each send), so the warm-up is three sends. Checked by leaking on purpose in the
Cartoonizer: 2 MB per image fails the test (+4-23 % per send), 0.4 MB per image (about
1 % per send) does not.
`python -m benchmarks.soak` is the long run behind the figures in docs/RELIABILITY.md.
"""

import asyncio

import ray

from benchmarks.soak import APP, mixed_calls, replica_rss, run_calls

MIX, WARM_UP_SENDS, MEASURED_SENDS, CONCURRENCY = 60, 3, 3, 4
REQUESTS = MIX * MEASURED_SENDS
STEADY_GROWTH = 0.02
MAX_ABOVE_LEVEL = 0.25


def test_mixed_requests_get_no_5xx_and_replica_memory_holds_steady(base_url, serve_config):
    gcs_address = ray.get_runtime_context().gcs_address
    mix = mixed_calls(MIX, seed=11)
    asyncio.run(run_calls(base_url, mix * WARM_UP_SENDS, CONCURRENCY))
    readings = [replica_rss(APP, gcs_address)]
    outcomes = []
    for _ in range(MEASURED_SENDS):
        outcomes += asyncio.run(run_calls(base_url, mix, CONCURRENCY))
        readings.append(replica_rss(APP, gcs_address))
    before, after = readings[0], readings[-1]

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
    present = [name for name in before if all(name in reading for reading in readings)]
    sends = list(zip(readings, readings[1:]))
    growing = {
        name: [f"{later[name] / earlier[name] - 1:+.1%}" for earlier, later in sends]
        for name in present
        if all(later[name] - earlier[name] > STEADY_GROWTH * before[name] for earlier, later in sends)
    }
    assert not growing, f"RSS grew in every send, as a leak does: {growing}"
    deployment_level: dict[str, int] = {}
    for name, rss in before.items():
        deployment = name.split()[0]
        deployment_level[deployment] = max(deployment_level.get(deployment, 0), rss)
    past_level = {
        name: f"{after[name] / deployment_level[name.split()[0]] - 1:+.1%}"
        for name in present
        if after[name] > (1 + MAX_ABOVE_LEVEL) * deployment_level[name.split()[0]]
    }
    assert not past_level, f"RSS ended far above its deployment's warmed-up level: {past_level}"
