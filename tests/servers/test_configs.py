"""Offline checks of the deployment and cluster files (no server, no network).

prefect.yaml: parsed by Prefect's own model, every entrypoint imports and is a flow, every
deployment's parameters validate against that flow's parameter schema. infra/ray-cluster.yaml:
Ray's cluster-config JSON schema (shipped inside the ray package). The KubeRay manifest and the
Dockerfile: structure, auth on, torch pinned and installed before the project.
"""

import copy
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from tests.conftest import ROOT

INFRA = ROOT / "infra"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
STAGES = ("embed", "spectrum", "train", "bounds", "figures", "report")


def _pin(package: str) -> str:
    """The exact version pyproject.toml pins `package` to (`name==X`)."""
    for dep in PYPROJECT["project"]["dependencies"]:
        match = re.fullmatch(rf"{re.escape(package)}==([\w.]+)", dep)
        if match:
            return match.group(1)
    raise AssertionError(f"{package} is not pinned with == in pyproject.toml")


TORCH = f"torch=={_pin('torch')}"


# ---------------------------------------------------------------- prefect.yaml


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def _by_name(prefect_yaml) -> dict[str, dict]:
    out = {}
    for dep in prefect_yaml["deployments"]:
        flow_file = Path(dep["entrypoint"].split(":")[0]).stem
        out[f"{flow_file}/{dep['name']}"] = dep
    return out


def test_prefect_yaml_parses_with_prefects_model(prefect_yaml):
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(prefect_yaml)
    assert len(model.deployments) == 11
    assert {d.work_pool.name for d in model.deployments} == {"rnngen-process"}
    assert model.build is None and model.push is None
    [step] = model.pull
    assert step == {
        "prefect.deployments.steps.set_working_directory": {"directory": "{{ $RNNGEN_ROOT }}"}
    }


def test_deployments_study_nightly_paper_by_hand_and_one_per_stage(prefect_yaml):
    from prefect.client.schemas.schedules import CronSchedule

    deployments = _by_name(prefect_yaml)
    assert set(deployments) == {
        "study/quick-nightly",
        *(f"study/{p}" for p in ("paper", "paper-long", "sigma-wide", "constrained")),
        *(f"{stage}/default" for stage in STAGES),
    }
    for name in ("paper", "paper-long", "sigma-wide", "constrained"):  # each in its folder
        assert deployments[f"study/{name}"]["parameters"] == {
            "profile": name,
            "out": f"data/{name}",
        }
    nightly, paper = deployments["study/quick-nightly"], deployments["study/paper"]
    assert nightly["parameters"]["profile"] == "quick"
    [schedule] = nightly["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])  # a valid cron
    assert schedule["cron"].split()[2:] == ["*", "*", "*"]  # every day
    assert paper["parameters"]["profile"] == "paper" and not paper.get("schedules")
    assert paper["parameters"]["out"] != nightly["parameters"]["out"]
    for stage in STAGES:
        assert deployments[f"{stage}/default"]["entrypoint"] == f"flows/{stage}.py:{stage}"


@pytest.mark.parametrize("index", range(11))
def test_entrypoint_is_a_flow_and_parameters_fit_its_schema(prefect_yaml, index, monkeypatch):
    from prefect.flows import Flow, load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    monkeypatch.chdir(ROOT)  # `prefect deploy` resolves entrypoints from the checkout
    dep = prefect_yaml["deployments"][index]
    flow = load_flow_from_entrypoint(dep["entrypoint"])
    assert isinstance(flow, Flow)
    assert flow.name == dep["entrypoint"].rsplit(":", 1)[1]
    schema = parameter_schema(flow).model_dump_for_openapi()
    params = dep.get("parameters", {})
    assert set(params) <= set(schema["properties"]), "a parameter the flow does not take"
    validate(params, schema, raise_on_error=True, ignore_required=True)  # as the server does
    flow.validate_parameters(params)  # and as the flow run will
    if "profile" in params:
        from rnngen.profiles import get_profile

        get_profile(params["profile"])


def test_a_wrong_parameter_is_caught_by_the_schema_check():
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    flow = load_flow_from_entrypoint(str(ROOT / "flows/study.py") + ":study")
    schema = parameter_schema(flow).model_dump_for_openapi()
    with pytest.raises(ValidationError, match="delta"):
        validate({"delta": "small"}, schema, raise_on_error=True, ignore_required=True)


def test_prefect_yaml_holds_no_credentials():
    text = (ROOT / "prefect.yaml").read_text()
    assert not re.search(r"(?i)(api_key|password|secret|RAY_AUTH_TOKEN\s*:|token\s*:)", text)


# ---------------------------------------------------------------- infra/ray-cluster.yaml


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((INFRA / "ray-cluster.yaml").read_text())


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_ray_cluster_yaml_fits_rays_cluster_schema(cluster, ray_schema):
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(cluster, ray_schema)
    validate_config(prepare_config(copy.deepcopy(cluster)))  # what `ray up` does first
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["gpu_worker"]["gpus"] = 1  # not a node-type field
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, ray_schema)


def test_ray_cluster_has_a_head_and_gpu_workers(cluster):
    types = cluster["available_node_types"]
    assert cluster["head_node_type"] in types
    gpu = [
        t
        for name, t in types.items()
        if name != cluster["head_node_type"] and t["resources"].get("GPU", 0) >= 1
    ]
    assert gpu and all(t["max_workers"] >= 1 for t in gpu)


def test_ray_cluster_installs_torch_pinned_before_the_project(cluster):
    setup = cluster["setup_commands"]
    torch = [i for i, cmd in enumerate(setup) if "install" in cmd and TORCH in cmd]
    project = [i for i, cmd in enumerate(setup) if re.search(r"install .*~/rnngen\s*$", cmd)]
    assert torch and project and torch[0] < project[0], setup
    assert cluster["file_mounts"]["~/rnngen"] == "."
    assert not any("torch" in cmd and TORCH not in cmd for cmd in setup)


def test_ray_cluster_keeps_token_auth_on(cluster):
    text = (INFRA / "ray-cluster.yaml").read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    assert any("RAY_AUTH_MODE=token" in c for c in cluster["initialization_commands"])
    for cmd in (*cluster["head_start_ray_commands"], *cluster["worker_start_ray_commands"]):
        assert "ray start" not in cmd or "RAY_AUTH_MODE=token" in cmd
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


# ---------------------------------------------------------------- infra/ray-runtime-env.yaml


def test_job_upload_leaves_out_venv_data_and_git(tmp_path):
    """The working_dir zip `ray job submit` would build with infra/ray-runtime-env.yaml, even
    with .gitignore not consulted: no virtualenv, data, git or Prefect state in it."""
    import zipfile

    from ray._private.runtime_env.packaging import create_package

    runtime_env = yaml.safe_load((INFRA / "ray-runtime-env.yaml").read_text())
    package = tmp_path / "working_dir.zip"
    create_package(str(ROOT), package, include_gitignore=False, excludes=runtime_env["excludes"])
    names = zipfile.ZipFile(package).namelist()
    assert "flows/cli.py" in names and "pyproject.toml" in names
    for left_out in (".venv/", "data/", ".git/", ".prefect/", "infra/.run/", "tmp/", ".gpu/"):
        assert not any(name.startswith(left_out) for name in names), left_out
    assert package.stat().st_size < 20 * 2**20


# ---------------------------------------------------------------- KubeRay manifest


@pytest.fixture(scope="module")
def kuberay() -> list[dict]:
    return list(yaml.safe_load_all((INFRA / "kuberay-raycluster.yaml").read_text()))


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_kuberay_raycluster_head_and_gpu_workers(kuberay):
    [cluster] = [d for d in kuberay if d["kind"] == "RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["metadata"]["name"]
    spec = cluster["spec"]
    major_minor = ".".join(ray.__version__.split(".")[:2])
    assert spec["rayVersion"].startswith(major_minor + ".")
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    [head_container] = _containers(head)
    image = head_container["image"]
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265}
    gpu_groups = [
        g
        for g in spec["workerGroupSpecs"]
        if int(_containers(g)[0]["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
    ]
    assert gpu_groups
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert [c["image"] for c in _containers(group)] == [image]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in head["template"]["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    pvcs = {d["metadata"]["name"] for d in kuberay if d["kind"] == "PersistentVolumeClaim"}
    assert claims <= pvcs


def test_kuberay_manifest_holds_no_token(kuberay):
    text = (INFRA / "kuberay-raycluster.yaml").read_text()
    assert "RAY_AUTH_MODE=disabled" not in text and "value: disabled" not in text
    for doc in kuberay:
        assert doc["kind"] != "Secret"


# ---------------------------------------------------------------- Dockerfile


def _docker_instructions() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (INFRA / "Dockerfile").read_text())
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_dockerfile_python_311_npm_and_torch_before_the_project():
    steps = _docker_instructions()
    python = PYPROJECT["project"]["requires-python"]  # ">=3.11,<3.12"
    assert steps[0].startswith("FROM python:3.11") and "3.11" in python
    runs = [s for s in steps if s.startswith("RUN ")]
    assert any("npm" in s and "apt-get install" in s for s in runs)
    torch = [
        i for i, s in enumerate(steps) if s.startswith("RUN ") and "pip install" in s and TORCH in s
    ]
    project = [i for i, s in enumerate(steps) if re.fullmatch(r"RUN pip install .*\s\.", s)]
    copies = [i for i, s in enumerate(steps) if s.startswith("COPY ")]
    assert torch and project and copies, steps
    assert torch[0] < min(copies) < project[0]  # torch's layer does not depend on the code
    assert not any("torch" in s and TORCH not in s for s in runs)


def test_ray_head_refuses_a_service_port_among_the_workers_ports(tmp_path):
    env = {**os.environ, "RNNGEN_RUN_DIR": str(tmp_path), "RAY_CLIENT_PORT": "12000"}
    proc = subprocess.run(
        [str(INFRA / "ray-head-start.sh")], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2
    assert "RAY_CLIENT_PORT=12000 lies in Ray's worker port range 10002-19999" in proc.stderr
    assert not (tmp_path / "ray-head.pid").exists()  # nothing was started
