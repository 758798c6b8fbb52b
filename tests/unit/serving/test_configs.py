"""Every Serve config in the repo is valid offline: Serve's own schema, AppArgs, sizing rules."""

from pathlib import Path

import pytest
import ray
import yaml
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import DeploymentSchema, ServeDeploySchema

from cartoon.batch import command as batch_command
from deployments.settings import AppArgs, BatchingConfig

ROOT = Path(__file__).resolve().parents[3]
RAYSERVICE = ROOT / "configs" / "rayservice.yaml"
RAYJOB = ROOT / "configs" / "rayjob.yaml"
# The Serve configs; the RayJob runs cartoonize-batch, not Serve.
CONFIG_FILES = sorted(path for path in [*ROOT.glob("*.yaml"), *(ROOT / "configs").glob("*.yaml")] if path != RAYJOB)
CPU_STAGES = ("Ingress", "FaceAligner", "Postprocessor", "VideoJobRunner")


def documents(path: Path) -> dict[str, dict]:
    """The YAML documents of a file by ``kind`` (a plain Serve config has none: "")."""
    return {document.get("kind", ""): document for document in yaml.safe_load_all(path.read_text())}


def serve_config(path: Path) -> dict:
    """The Serve config a file holds: the file itself, or a RayService's serveConfigV2."""
    found = documents(path)
    if "RayService" in found:
        return yaml.safe_load(found["RayService"]["spec"]["serveConfigV2"])
    return found[""]


def deployments(path: Path) -> dict[str, dict]:
    (app,) = serve_config(path)["applications"]
    return {deployment["name"]: deployment for deployment in app["deployments"]}


def cpu_quantity(value: str | int) -> float:
    """A Kubernetes CPU quantity ("8", "500m") in cores."""
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return documents(RAYSERVICE)["RayService"]


@pytest.fixture(scope="module")
def worker_groups(rayservice) -> dict[str, dict]:
    groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return {group["groupName"]: group for group in groups}


def limits(group: dict) -> dict:
    (container,) = group["template"]["spec"]["containers"]
    return container["resources"]["limits"]


def test_the_repo_has_the_laptop_gpu_node_and_cluster_configs():
    assert {path.relative_to(ROOT).as_posix() for path in CONFIG_FILES} >= {
        "serve_config.yaml", "configs/gpu.yaml", "configs/rayservice.yaml",
    }


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_config_parses_with_serves_schema_and_app_args(path):
    schema = ServeDeploySchema(**serve_config(path))
    (app,) = schema.applications
    assert app.import_path == "serve_app.app:build_app"
    AppArgs(**app.args)
    # The image or the checkout holds the code and weights; nothing is fetched at start:
    # a runtime_env may set environment variables, nothing else (no working_dir, pip...).
    assert set(app.runtime_env or {}) <= {"env_vars"}
    # Serve's schema ignores unknown deployment options, so a typo would pass unseen.
    for name, deployment in deployments(path).items():
        unknown = set(deployment) - set(DeploymentSchema.model_fields)
        assert not unknown, f"{path.name}: {name} has unknown options {unknown}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_every_deployment_autoscales(path):
    found = deployments(path)
    assert set(found) == {"Ingress", "FaceAligner", "Cartoonizer", "Postprocessor", "VideoJobRunner"}
    for name, deployment in found.items():
        assert deployment.get("autoscaling_config"), f"{path.name}: {name} has no autoscaling_config"
        assert "num_replicas" not in deployment, f"{path.name}: {name} fixes num_replicas"
        # Serve's schema takes the block as a plain dict; its own model checks min <= max.
        AutoscalingConfig(**deployment["autoscaling_config"])


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_cartoonizer_takes_at_least_a_full_batch_of_requests(path):
    cartoonizer = deployments(path)["Cartoonizer"]
    batching = BatchingConfig(**cartoonizer.get("user_config", {}))
    assert cartoonizer["max_ongoing_requests"] >= batching.max_batch_size


def test_rayservice_has_head_cpu_and_gpu_groups_on_this_ray_version(rayservice, worker_groups):
    assert (rayservice["apiVersion"], rayservice["kind"]) == ("ray.io/v1", "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert set(worker_groups) == {"cpu", "gpu"}
    assert "nvidia.com/gpu" not in limits(worker_groups["cpu"])
    for group in worker_groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_rayservice_gpu_pods_hold_every_cartoonizer_and_nothing_else(worker_groups):
    gpu = worker_groups["gpu"]
    gpus_per_pod = int(limits(gpu)["nvidia.com/gpu"])
    assert gpus_per_pod >= 1
    cartoonizer = deployments(RAYSERVICE)["Cartoonizer"]
    num_gpus = cartoonizer["ray_actor_options"]["num_gpus"]
    assert num_gpus == 1, "one Cartoonizer per GPU: shared GPUs split the batches (benchmarks.sweep)"
    most = cartoonizer["autoscaling_config"]["max_replicas"] * num_gpus
    assert most <= gpu["maxReplicas"] * gpus_per_pod, "Cartoonizers that no GPU pod could ever hold"
    # GPU pods offer Ray no CPU, so only the Cartoonizer (which asks for none) lands there.
    assert gpu["rayStartParams"]["num-cpus"] == "0"
    assert cartoonizer["ray_actor_options"]["num_cpus"] == 0
    for name in CPU_STAGES:
        assert deployments(RAYSERVICE)[name]["ray_actor_options"]["num_cpus"] > 0


def test_rayservice_cpu_pods_hold_every_cpu_stage_at_full_scale(rayservice, worker_groups):
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "the head runs no replicas"
    cpu = worker_groups["cpu"]
    capacity = cpu["maxReplicas"] * cpu_quantity(limits(cpu)["cpu"])
    demand = sum(
        deployment["autoscaling_config"]["max_replicas"] * deployment["ray_actor_options"]["num_cpus"]
        for name, deployment in deployments(RAYSERVICE).items()
        if name in CPU_STAGES
    )
    assert demand <= capacity


def test_rayservice_lets_only_the_serve_port_in_from_outside_the_ray_cluster(rayservice, worker_groups):
    policy = documents(RAYSERVICE)["NetworkPolicy"]["spec"]
    label = policy["podSelector"]["matchLabels"]
    pods = [rayservice["spec"]["rayClusterConfig"]["headGroupSpec"], *worker_groups.values()]
    for pod in pods:
        assert label.items() <= pod["template"]["metadata"]["labels"].items(), "a Ray pod the policy misses"
    assert policy["policyTypes"] == ["Ingress"]
    open_to_all, others = [], []
    for rule in policy["ingress"]:
        if "from" not in rule:
            open_to_all += [port["port"] for port in rule["ports"]]
        elif rule["from"] == [{"podSelector": {"matchLabels": label}}]:
            assert "ports" not in rule  # Ray's own pods: any port
        else:
            others += [port["port"] for port in rule["ports"]]
            assert all(peer.get("podSelector") or peer.get("namespaceSelector", {}).get("matchLabels")
                       for peer in rule["from"]), "a rule open to every pod of every namespace"
    assert open_to_all == [8000]
    assert not {6379, 10001} & set(others), "the GCS or Ray Client reachable from outside"
    (head,) = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert 10001 not in [port["containerPort"] for port in head["ports"]]


def test_rayjob_runs_a_valid_ray_engine_command_on_the_services_image_with_a_gpu_per_actor(rayservice):
    rayjob = documents(RAYJOB)["RayJob"]
    assert rayjob["apiVersion"] == "ray.io/v1"
    cluster = rayjob["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    command, *argv = rayjob["spec"]["entrypoint"].split()
    assert command == "cartoonize-batch"
    args = batch_command.build_parser().parse_args(argv)
    assert (args.engine, args.address) == ("ray", "auto")
    pods = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    (service_head,) = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert {container["image"] for pod in pods for container in pod["template"]["spec"]["containers"]} == {
        service_head["image"]
    }
    gpus = sum(group["maxReplicas"] * int(limits(group).get("nvidia.com/gpu", 0)) for group in cluster["workerGroupSpecs"])
    assert args.unet_actors * args.gpus_per_actor <= gpus, "UNet actors that no GPU pod can hold"


def test_rayservice_video_jobs_live_on_one_volume_every_cpu_pod_mounts(rayservice, worker_groups):
    (app,) = serve_config(RAYSERVICE)["applications"]
    jobs_dir = Path(AppArgs(**app["args"]).jobs_dir)
    claim = documents(RAYSERVICE)["PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = worker_groups["cpu"]["template"]["spec"]
    (volume,) = [volume for volume in spec["volumes"]
                 if volume.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]]
    (container,) = spec["containers"]
    (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == volume["name"]]
    assert jobs_dir.is_relative_to(mount["mountPath"]), "jobs_dir is not on the shared volume"
