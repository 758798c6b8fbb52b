"""The HTTP contract under hostile input, overload, faults and access control, over real HTTP."""

import asyncio
import io
import os
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import ray
from PIL import Image
from ray.util import list_named_actors

from deployments.settings import AppArgs
from tests import photos
from tests.integration.conftest import ALLOWED_ORIGIN, API_KEY, OVERLOADED_RETRY_AFTER_S
from tests.integration.test_http_api import assert_error, assert_still_serving

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def astronaut_png():
    return photos.encode(photos.astronaut())


@pytest.fixture(scope="module")
def small_jpeg():
    return photos.encode(photos.astronaut()[:256, 96:352], "JPEG")


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/no/such/route", 404, "not_found"),
    ("GET", "/v1/cartoonize", 405, "method_not_allowed"),
    ("DELETE", "/v1/styles", 405, "method_not_allowed"),
])
def test_unknown_routes_and_methods_are_json(client, method, path, status, code):
    assert_error(client.request(method, path), status, code)


def test_the_multipart_media_type_is_case_insensitive(client, small_jpeg):
    request = client.build_request("POST", "/v1/cartoonize", files={"image": ("a.jpg", small_jpeg, "image/jpeg")})
    request.headers["content-type"] = request.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    assert client.send(request).status_code == 200


@pytest.mark.parametrize("count", [33, 40])
def test_a_batch_over_the_item_limit_is_413_whatever_its_size(client, serve_config, count):
    limit = AppArgs(**serve_config["applications"][0]["args"]).max_batch_items
    assert count > limit
    files = [("images", (f"{i}.png", b"tiny", "image/png")) for i in range(count)]
    assert_error(client.post("/v1/cartoonize/batch", files=files), 413, "too_many_items")


def test_a_batch_over_the_pixel_budget_is_413_before_any_work(client, serve_config):
    budget = AppArgs(**serve_config["applications"][0]["args"]).max_batch_pixels
    side = 3000  # a flat 9 MP PNG is a few KB
    flat = photos.encode(np.full((side, side, 3), 128, np.uint8))
    count = budget // (side * side) + 1
    files = [("images", (f"{i}.png", flat, "image/png")) for i in range(count)]
    body = assert_error(client.post("/v1/cartoonize/batch", files=files), 413, "batch_too_large")
    assert str(budget) in body["error"]["message"]


def strip_jpeg() -> bytes:
    """The 55000x727 JPEG from the bug report: under 40 MP, a few hundred KB."""
    rng = np.random.default_rng(1)
    column = rng.integers(0, 256, (727, 1, 3), dtype=np.uint8)
    strip = np.repeat(column, 55000, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, "JPEG", quality=60)
    return buffer.getvalue()


def test_the_thin_strip_is_served_within_the_memory_limits(client, serve_config, astronaut_png):
    args = AppArgs(**serve_config["applications"][0]["args"])
    data = strip_jpeg()
    assert len(data) < args.max_body_bytes
    response = client.post("/v1/cartoonize", params={"format": "jpeg"}, content=data,
                           headers={"accept": "application/json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["width"] * body["height"] <= args.max_output_pixels
    assert body["width"] / body["height"] == pytest.approx(55000 / 727, rel=0.01)
    assert_still_serving(client, astronaut_png)


def test_readiness_reports_every_deployment_and_holds_under_overload(base_url, client, astronaut_png):
    async def flood_and_probe():
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as session:
            flood = [asyncio.create_task(session.post("/overloaded/v1/cartoonize", content=astronaut_png))
                     for _ in range(12)]
            await asyncio.sleep(0.5)
            probes = [await session.get("/overloaded/readyz", timeout=10) for _ in range(3)]
            await asyncio.gather(*flood)
            return probes

    for probe in asyncio.run(flood_and_probe()):
        assert probe.status_code == 200, probe.text
        deployments = probe.json()["deployments"]
        assert set(deployments) == {"Ingress", "FaceAligner", "Cartoonizer", "Postprocessor", "VideoJobRunner"}
        assert all(d["replicas"].get("RUNNING", 0) >= 1 for d in deployments.values())


def test_a_burst_right_after_a_start_is_served_at_capacity(base_url):
    """16 photos at once on an Ingress that has completed none: admitted by the start-up forward."""
    photo = photos.encode(cv2.resize(photos.astronaut(), (512, 512), interpolation=cv2.INTER_AREA), "JPEG")

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as session:
            return await asyncio.gather(*(session.post("/fresh/v1/cartoonize", content=photo) for _ in range(16)))

    answers = asyncio.run(burst())
    assert [answer.status_code for answer in answers] == [200] * 16, [answer.text[:200] for answer in answers]


def test_at_capacity_a_request_is_refused_before_its_body_is_read(base_url, large_jpeg):
    """The /overloaded copy admits one image: while it works, a request that sends only its
    headers (declaring 5 MB) is answered 503 without a byte of its body sent."""
    host, port = base_url.removeprefix("http://").split(":")
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(httpx.post, f"{base_url}/overloaded/v1/cartoonize", params={"max_side": 256},
                           content=large_jpeg, timeout=120)
        head = ""
        time.sleep(0.5)  # the busy image's upload
        while not head.startswith("HTTP/1.1 503") and not busy.done():
            # Until the busy image is admitted, a probe passes admission and waits for its
            # body (the recv times out); once it is, a probe is refused at once.
            with socket.create_connection((host, int(port)), timeout=1) as connection:
                connection.sendall(b"POST /overloaded/v1/cartoonize HTTP/1.1\r\nHost: localhost\r\n"
                                   b"Content-Type: image/jpeg\r\nContent-Length: 5000000\r\n\r\n")
                try:
                    head = connection.recv(65536).decode("latin-1")
                except TimeoutError:
                    head = ""
        assert busy.result().status_code == 200
    assert head.startswith("HTTP/1.1 503"), head
    assert f"retry-after: {OVERLOADED_RETRY_AFTER_S}" in head.lower()  # the body may come in a later packet


def test_every_answer_carries_the_request_id_which_the_logs_hold(client, replica_logs):
    request_id = f"test-{uuid.uuid4()}"
    response = client.post("/v1/cartoonize", content=b"not an image", headers={"X-Request-Id": request_id})
    assert response.status_code == 400 and response.headers["x-request-id"] == request_id
    assert client.get("/nowhere").headers["x-request-id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logged = [line for path in replica_logs.glob("replica_cartoon_Ingress_*.log")
                  for line in path.read_text(errors="replace").splitlines() if request_id in line]
        if logged:
            break
        time.sleep(0.5)
    assert any("POST /v1/cartoonize 400" in line for line in logged), logged


def test_with_a_key_every_route_but_the_probes_and_the_static_pages_needs_it(client, small_jpeg, replica_logs):
    for path in ("/guarded/healthz", "/guarded/readyz"):
        assert client.get(path).status_code == 200
    # The page and the docs page hold no data and must load to ask for the key.
    for path in ("/guarded/", "/guarded/docs"):
        page = client.get(path)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], path
    assert_error(client.get("/guarded/v1/styles"), 401, "unauthorized")
    assert_error(client.post("/guarded/v1/cartoonize", content=small_jpeg,
                             headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
    assert client.get("/guarded/v1/styles", headers=AUTH).status_code == 200
    assert client.post("/guarded/v1/cartoonize", content=small_jpeg, headers=AUTH).status_code == 200
    # The open app needs none; no log line of any replica holds the key.
    assert client.get("/v1/styles").status_code == 200
    assert not [path for path in replica_logs.glob("*.log") if API_KEY in path.read_text(errors="replace")]


def test_with_a_key_the_docs_render_and_offer_the_bearer_scheme(client):
    """Swagger UI loads the schema without the key, then sends the one typed into Authorize."""
    schema = client.get("/guarded/openapi.json")
    assert schema.status_code == 200, schema.text
    document = schema.json()
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": "the service's API key"}
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/readyz"]["get"]["security"] == []
    assert "security" not in client.get("/openapi.json").json()  # the open app asks for nothing


def test_cors_is_off_by_default_and_allows_only_the_configured_origins(client):
    preflight = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}
    assert "access-control-allow-origin" not in client.options("/v1/cartoonize", headers=preflight).headers
    allowed = client.options("/guarded/v1/cartoonize", headers=preflight)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    other = client.options("/guarded/v1/cartoonize", headers={**preflight, "Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_a_client_that_goes_away_cancels_its_work_downstream(base_url, large_jpeg, replica_logs):
    """Serve cancels the request of a client that disconnects; the Ingress cancels its calls."""
    request_id = f"gone-{uuid.uuid4()}"
    # 25 MP: seconds of decoding in the FaceAligner, so the request is surely in flight
    # when the client stops reading after half a second and closes the connection.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/v1/cartoonize", params={"max_side": 256}, content=large_jpeg,
                   headers={"X-Request-Id": request_id}, timeout=httpx.Timeout(120, read=0.5))
    deadline = time.monotonic() + 60
    cancelled = []
    while not cancelled and time.monotonic() < deadline:
        time.sleep(0.5)
        cancelled = [line for path in replica_logs.glob("replica_cartoon_Ingress_*.log")
                     for line in path.read_text(errors="replace").splitlines()
                     if request_id in line and "request cancelled" in line]
    assert cancelled, f"no cancellation logged for {request_id}"


def replica_actors(app: str, deployment: str) -> list[str]:
    return [actor["name"] for actor in list_named_actors(all_namespaces=True)
            if actor["name"].startswith(f"SERVE_REPLICA::{app}#{deployment}#")]


def resends_logged(replica_logs) -> int:
    return sum(path.read_text(errors="replace").count("sending it again")
               for path in replica_logs.glob("replica_guarded_Ingress_*.log"))


# Each kill is aimed at a large photo the victim is surely working on, while three
# clients keep it busy with small ones (within the Ingress's admission floor), and
# only once the victim itself reports a request in flight (on a slow machine the
# large photo's upload outlasted the fixed delay); if the timing still misses, the
# test kills again, at most this often.
MAX_KILLS = 3
KILL_AFTER_S = {"FaceAligner": 0.3, "Cartoonizer": 2.0}


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    """25 MP: seconds of decoding in the FaceAligner on a busy CI machine."""
    return photos.encode(cv2.resize(photos.astronaut(), (5000, 5000), interpolation=cv2.INTER_LINEAR), "JPEG")


@pytest.mark.parametrize("deployment", ["Cartoonizer", "FaceAligner"])
def test_killing_a_replica_under_load_loses_no_image(base_url, small_jpeg, large_jpeg, deployment, replica_logs):
    """Requests in flight when their replica dies are sent again and answered 200."""
    resends_before = resends_logged(replica_logs)

    async def load_and_kill() -> tuple[list[int], int]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=AUTH) as session:
            async def client_loop(stop: asyncio.Event) -> list[int]:
                statuses = []
                while not stop.is_set():
                    statuses.append((await session.post("/guarded/v1/cartoonize", content=small_jpeg)).status_code)
                return statuses

            stop = asyncio.Event()
            clients = [asyncio.create_task(client_loop(stop)) for _ in range(3)]
            statuses, kills, killed = [], 0, set()
            while kills < MAX_KILLS and resends_logged(replica_logs) == resends_before:
                await asyncio.sleep(2.0)
                while len(live := set(replica_actors("guarded", deployment)) - killed) != 1:
                    await asyncio.sleep(0.5)  # the replacement of the last victim is not up yet
                (victim,) = live
                killed.add(victim)
                large = asyncio.create_task(
                    session.post("/guarded/v1/cartoonize", params={"max_side": 256}, content=large_jpeg)
                )
                await asyncio.sleep(KILL_AFTER_S[deployment])
                actor = ray.get_actor(victim, namespace="serve")
                while not await actor.get_num_ongoing_requests.remote():  # Serve's replica actor method
                    await asyncio.sleep(0.01)
                ray.kill(actor, no_restart=True)
                kills += 1
                statuses.append((await large).status_code)
                await asyncio.sleep(3.0)  # the resend lines reach the log
            stop.set()
            return statuses + [status for statuses in await asyncio.gather(*clients) for status in statuses], kills

    statuses, kills = asyncio.run(load_and_kill())
    assert statuses and set(statuses) == {200}, statuses
    # Some request was on a victim when it died: the test saw real resends.
    assert resends_logged(replica_logs) > resends_before, f"no request in flight in {kills} kills"


def own_processes(title: str) -> list[int]:
    """Processes of this test session's Ray whose title Ray set to start with ``title``.

    Only descendants of this process (the driver started Ray's raylet, which starts the
    workers): the machine is shared, and another session's replicas bear the same titles.
    """
    def parent(pid: int) -> int:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])

    me, found = os.getpid(), []
    for proc in Path("/proc").iterdir():
        try:
            if not (proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(title.encode())):
                continue
            pid = int(proc.name)
            while pid > 1 and pid != me:
                pid = parent(pid)
            if pid == me:
                found.append(int(proc.name))
        except OSError:
            pass  # gone meanwhile
    return found


def replica_pids(app: str, deployment: str) -> list[int]:
    """Processes whose title Ray set to this deployment's replica (``ray::ServeReplica:APP:NAME``)."""
    return own_processes(f"ray::ServeReplica:{app}:{deployment}")


def logged(replica_logs, text: str) -> int:
    return sum(path.read_text(errors="replace").count(text) for path in replica_logs.glob("replica_guarded_Ingress_*.log"))


TRIED_ALONE = "is tried alone"


def one_live_replica(deployment: str) -> tuple[int, ray.actor.ActorHandle]:
    """The pid and actor of the guarded app's only replica of ``deployment``, once its replacement is up."""
    while len(pids := replica_pids("guarded", deployment)) != 1 or \
            len(actors := replica_actors("guarded", deployment)) != 1:
        time.sleep(0.5)  # the replacement of an earlier victim is not up yet
    return pids[0], ray.get_actor(actors[0], namespace="serve")


def crash_when_busy(pid: int, actor, done=lambda: False) -> None:
    """SIGKILLs the replica once it works on a request, as a segfault or the OOM killer would."""
    while not done() and not ray.get(actor.get_num_ongoing_requests.remote()):  # Serve's replica actor method
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("deployment", ["FaceAligner", "Cartoonizer"])
def test_a_replica_crashing_under_repeated_sends_of_one_photo_loses_nothing_and_refuses_nothing(
        base_url, deployment, replica_logs):
    """The bug report: one portrait sent over and over by four clients; its replica's process
    dies under several copies. Every copy is answered 200, none 422: the copies were suspects,
    one was tried alone and passed, the others went on through the graph."""
    photo = photos.encode(cv2.resize(photos.grace_hopper(), (1600, 1600), interpolation=cv2.INTER_LINEAR), "JPEG")
    trials_before = logged(replica_logs, TRIED_ALONE)

    async def send_and_crash() -> list[int]:
        async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=AUTH) as session:
            async def client_loop(stop: asyncio.Event) -> list[int]:
                statuses = []
                while not stop.is_set():
                    statuses.append((await session.post("/guarded/v1/cartoonize", params={"max_side": 256},
                                                        content=photo)).status_code)
                return statuses

            pid, actor = await asyncio.to_thread(one_live_replica, deployment)
            stop = asyncio.Event()
            clients = [asyncio.create_task(client_loop(stop)) for _ in range(4)]
            await asyncio.sleep(2.0)
            await asyncio.to_thread(crash_when_busy, pid, actor)
            # Sends go on until the replacement has answered some: the copies sent while
            # the suspect was on trial waited for its verdict, then went through.
            await asyncio.to_thread(one_live_replica, deployment)
            await asyncio.sleep(10.0)
            stop.set()
            return [status for statuses in await asyncio.gather(*clients) for status in statuses]

    statuses = asyncio.run(send_and_crash())
    assert statuses and set(statuses) == {200}, statuses
    assert logged(replica_logs, TRIED_ALONE) > trials_before, "the crash found no copy in flight"


def test_an_input_that_kills_a_replica_and_then_its_trial_alone_is_poison(client, small_jpeg, replica_logs):
    """A replica process dying under an image makes it a suspect; its trial, alone in a worker
    of its own, dies too (the test kills it, as a decoder crash would): now it is poison."""
    poisonous = photos.encode(cv2.resize(photos.grace_hopper(), (4800, 4800), interpolation=cv2.INTER_LINEAR), "JPEG")
    resends_before = resends_logged(replica_logs)
    trials_before = logged(replica_logs, TRIED_ALONE)
    for _ in range(MAX_KILLS):
        pid, victim = one_live_replica("FaceAligner")
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(client.post, "/guarded/v1/cartoonize", params={"max_side": 256},
                                 content=poisonous, headers=AUTH)
            time.sleep(KILL_AFTER_S["FaceAligner"])
            crash_when_busy(pid, victim, answer.done)
            while not answer.done() and not (trials := own_processes("ray::cartoonize_alone")):
                time.sleep(0.05)
            if not answer.done():
                os.kill(trials[0], signal.SIGKILL)
            answered = answer.result()
        if answered.status_code != 200:  # 200: a kill came after the work was done
            break
    assert_error(answered, 422, "poison_input")
    assert logged(replica_logs, TRIED_ALONE) > trials_before
    assert resends_logged(replica_logs) == resends_before  # never sent to another shared replica
    # Sent again, it is refused at once, before any replica; other images are served.
    start = time.monotonic()
    assert_error(client.post("/guarded/v1/cartoonize", content=poisonous, headers=AUTH), 422, "poison_input")
    assert time.monotonic() - start < 5.0
    deadline = time.monotonic() + 120
    while (status := client.post("/guarded/v1/cartoonize", content=small_jpeg, headers=AUTH).status_code) != 200:
        assert time.monotonic() < deadline, status  # the FaceAligner's replacement is up within two minutes
        time.sleep(1.0)
