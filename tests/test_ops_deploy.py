"""Deployment files: the systemd unit, the sample configs, the Kubernetes manifests, the
Dockerfile (parsed, and its install steps run by hand in a fresh venv)."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pressured.config import MetricsSettings, load_settings, validate_settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "examples" / "systemd" / "pressured.service"
SAMPLE_CONFIG = ROOT / "examples" / "systemd" / "pressured.toml"
KUBERNETES = ROOT / "examples" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
CAPABILITIES = ("KILL", "SYS_RESOURCE", "IPC_LOCK", "SYS_PTRACE", "SYS_NICE")


def read_unit() -> configparser.ConfigParser:
    # systemd allows repeated keys; strict=False keeps the last, which is enough here.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_file_essentials() -> None:
    """The unit is Type=notify, restarts always, has a watchdog, reload and OOM protection."""
    service = read_unit()["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "always"
    assert service["ExecStart"].startswith("/usr/local/bin/pressured run --config ")
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["WatchdogSec"]
    assert service["OOMScoreAdjust"] == "-1000"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert "/sys/fs/cgroup" in service["ReadWritePaths"].split()
    assert "ProtectControlGroups" not in service  # would make cgroup.kill impossible
    assert read_unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_file_capabilities() -> None:
    """Ambient and bounding capability sets are exactly the five the daemon uses."""
    service = read_unit()["Service"]
    wanted = {f"CAP_{name}" for name in CAPABILITIES}
    assert set(service["AmbientCapabilities"].split()) == wanted
    assert set(service["CapabilityBoundingSet"].split()) == wanted


def test_unit_config_path_matches_sample() -> None:
    """ExecStart's --config is where the sample config is meant to be installed."""
    exec_start = shlex.split(read_unit()["Service"]["ExecStart"])
    assert exec_start[exec_start.index("--config") + 1] == "/etc/pressured/pressured.toml"


def test_sample_config_is_valid() -> None:
    """examples/systemd/pressured.toml passes validation and sets a journal path."""
    settings = load_settings(SAMPLE_CONFIG, environ={})
    assert settings.journal.path == "/var/lib/pressured/kills.jsonl"
    assert settings.metrics.host == "127.0.0.1"
    service = read_unit()["Service"]
    # The journal directory is the unit's writable state directory.
    assert Path(settings.journal.path).parent.name == service["StateDirectory"]


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
MDWE_PROBE = f"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(77)
import asyncio, uvloop
from pressured.kernel import pidfd
from pressured.ops.metrics import Metrics
from prometheus_client import generate_latest
assert pidfd.mrelease_supported()
async def main():
    await asyncio.sleep(0)
    return generate_latest(Metrics().registry)
assert uvloop.run(main())
assert asyncio.run(main())
assert ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 7)() == 7
"""


def test_memory_deny_write_execute_is_safe() -> None:
    """MemoryDenyWriteExecute=yes in the unit: uvloop, ctypes and metrics run under MDWE."""
    assert read_unit()["Service"]["MemoryDenyWriteExecute"] == "yes"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr


def load_yaml(path: Path) -> list[dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def config_maps(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == "ConfigMap"]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"]
    return spec["template"]["spec"] if "template" in spec else spec


def pressured_container(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in spec["containers"] if c["name"] == "pressured"]
    return dict(container)


@pytest.mark.parametrize("name", ["sidecar.yaml", "daemonset.yaml"])
def test_manifest_capabilities_and_probes(name: str) -> None:
    """The pressured container adds the five capabilities, is not privileged, probes /healthz."""
    docs = load_yaml(KUBERNETES / name)
    (workload,) = [doc for doc in docs if doc["kind"] in ("Pod", "DaemonSet")]
    container = pressured_container(pod_spec(workload))
    security = container["securityContext"]
    assert set(security["capabilities"]["add"]) == set(CAPABILITIES)
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security.get("privileged", False)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == MetricsSettings().port


def test_sidecar_shares_the_process_namespace() -> None:
    """The sidecar pod shares its PID namespace and mounts its ConfigMap."""
    (pod,) = load_yaml(KUBERNETES / "sidecar.yaml")
    assert pod["spec"]["shareProcessNamespace"] is True
    (config_map,) = load_yaml(KUBERNETES / "configmap.yaml")
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == config_map["metadata"]["name"]


def test_daemonset_uses_host_pid_and_cgroup_mount() -> None:
    """The DaemonSet has hostPID and the host's cgroup tree mounted writable."""
    docs = load_yaml(KUBERNETES / "daemonset.yaml")
    (daemonset,) = [doc for doc in docs if doc["kind"] == "DaemonSet"]
    spec = pod_spec(daemonset)
    assert spec["hostPID"] is True
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    assert volumes["cgroup"]["hostPath"]["path"] == "/sys/fs/cgroup"
    mounts = {mount["name"]: mount for mount in pressured_container(spec)["volumeMounts"]}
    assert mounts["cgroup"]["mountPath"] == "/sys/fs/cgroup"
    assert not mounts["cgroup"].get("readOnly", False)


@pytest.mark.parametrize("name", ["configmap.yaml", "daemonset.yaml"])
def test_config_maps_hold_valid_configs_binding_all_addresses(name: str) -> None:
    """Each ConfigMap's pressured.toml validates and binds 0.0.0.0 for the probes."""
    (config_map,) = config_maps(load_yaml(KUBERNETES / name))
    settings = validate_settings(tomllib.loads(config_map["data"]["pressured.toml"]))
    assert settings.metrics.host == "0.0.0.0"  # noqa: S104 -- asserting the sample's bind
    assert settings.metrics.enabled


MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
OTEL_PROMETHEUS_EXPORTER_PORT = 9464


def kubernetes_schema_errors(doc: dict[str, Any]) -> str | None:
    """The schema validator's complaint about one resource, None when it passes (strict:
    unknown fields are errors too)."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is in the test extra"
    )
    try:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc).splitlines()[0]
    return None


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifests_pass_the_kubernetes_schemas(path: Path) -> None:
    """Every resource of every manifest validates against the Kubernetes API schemas."""
    docs = load_yaml(path)
    assert docs
    problems = {
        f"{doc['kind']}/{doc['metadata']['name']}": kubernetes_schema_errors(doc) for doc in docs
    }
    assert {name: why for name, why in problems.items() if why} == {}


def test_schema_validator_catches_a_broken_manifest() -> None:
    """The validator is real: a string port and a misspelt field are both rejected."""
    (pod,) = load_yaml(KUBERNETES / "sidecar.yaml")
    broken = json.loads(json.dumps(pod))
    broken["spec"]["containers"][1]["ports"][0]["containerPort"] = "metrics"
    assert kubernetes_schema_errors(broken) is not None
    misspelt = json.loads(json.dumps(pod))
    misspelt["spec"]["shareProcessNamespaces"] = True
    assert kubernetes_schema_errors(misspelt) is not None


def test_node_critical_class_comes_with_its_resource_quota() -> None:
    """system-node-critical outside kube-system ships the ResourceQuota managed clusters need."""
    docs = load_yaml(KUBERNETES / "daemonset.yaml")
    (daemonset,) = [doc for doc in docs if doc["kind"] == "DaemonSet"]
    priority = pod_spec(daemonset).get("priorityClassName")
    namespace = daemonset["metadata"]["namespace"]
    if priority is None or namespace == "kube-system":
        return
    quotas = [
        doc
        for doc in docs
        if doc["kind"] == "ResourceQuota" and doc["metadata"]["namespace"] == namespace
    ]
    selectors = [
        expression
        for quota in quotas
        for expression in quota["spec"]["scopeSelector"]["matchExpressions"]
    ]
    assert any(
        e["scopeName"] == "PriorityClass" and e["operator"] == "In" and priority in e["values"]
        for e in selectors
    )


def test_sidecar_watches_its_pod_by_default() -> None:
    """The sidecar selects sidecar mode in its environment, so its ConfigMap's scope is the
    pod's cgroup, and mounts the host's cgroup tree to reach that group."""
    (pod,) = load_yaml(KUBERNETES / "sidecar.yaml")
    container = pressured_container(pod["spec"])
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    assert env["PRESSURED_DAEMON__MODE"] == "sidecar"
    (config_map,) = load_yaml(KUBERNETES / "configmap.yaml")
    data = tomllib.loads(config_map["data"]["pressured.toml"])
    settings = load_settings_from_data(data, env)
    assert [scope.cgroup for scope in settings.scopes] == ["pod"]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert volumes["cgroup"]["hostPath"]["path"] == "/sys/fs/cgroup"
    assert mounts["cgroup"]["mountPath"] == "/sys/fs/cgroup"
    assert not mounts["cgroup"].get("readOnly", False)


def load_settings_from_data(data: dict[str, Any], env: dict[str, str]) -> Any:
    from pressured.config import deep_merge, env_overrides

    return validate_settings(deep_merge(data, env_overrides(env)))


def test_metrics_port_is_not_the_opentelemetry_exporters() -> None:
    """The default port, and every port the examples publish, is not 9464 (taken by the
    OpenTelemetry Prometheus exporter)."""
    assert MetricsSettings().port != OTEL_PROMETHEUS_EXPORTER_PORT
    texts = [path.read_text() for path in MANIFESTS]
    texts += [SAMPLE_CONFIG.read_text(), DOCKERFILE.read_text(), UNIT.read_text()]
    assert not any(
        str(OTEL_PROMETHEUS_EXPORTER_PORT) in text.replace("19464", "") for text in texts
    )
    assert load_settings(SAMPLE_CONFIG, environ={}).metrics.port == MetricsSettings().port


# -- Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def test_dockerfile_instructions() -> None:
    """FROM python:3.11-slim, RUN, COPY, a /healthz HEALTHCHECK and ENTRYPOINT pressured run."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    keywords = [keyword for keyword, _ in instructions]
    for needed in ("FROM", "RUN", "COPY", "ENTRYPOINT", "HEALTHCHECK"):
        assert needed in keywords
    froms = [arguments for keyword, arguments in instructions if keyword == "FROM"]
    assert all(image.split()[0] == "python:3.11-slim" for image in froms)
    (entrypoint,) = [arguments for keyword, arguments in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["pressured", "run"]
    (healthcheck,) = [arguments for keyword, arguments in instructions if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck
    assert any(
        "pip install" in arguments for keyword, arguments in instructions if keyword == "RUN"
    )


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copy_build_context(destination: Path) -> None:
    """Copy the repository as `docker build` would send it (honouring .dockerignore).

    A copy, not the checkout itself: pip builds in-tree and would leave build/ and
    *.egg-info behind in a working tree others are using."""
    patterns = dockerignore_patterns()

    def ignored(relative: str) -> bool:
        for pattern in patterns:
            bare = pattern.removeprefix("**/")
            if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(Path(relative).name, bare):
                return True
        return False

    def ignore(directory: str, names: list[str]) -> set[str]:
        base = Path(directory).relative_to(ROOT)
        return {name for name in names if ignored(str(base / name).removeprefix("./"))}

    shutil.copytree(ROOT, destination, ignore=ignore)


@pytest.mark.slow
def test_dockerfile_install_steps_in_a_fresh_venv(tmp_path: Path) -> None:
    """The Dockerfile's RUN steps, run by hand in a new venv, give a working `pressured`."""
    context = tmp_path / "context"
    copy_build_context(context)
    assert (context / "pyproject.toml").exists()
    assert not (context / "tests").exists()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    # The image's absolute paths, mapped into the temporary directory.
    paths = {"/wheels": str(tmp_path / "wheels"), "/src": str(context)}
    runs = [
        arguments
        for keyword, arguments in dockerfile_instructions(DOCKERFILE.read_text())
        if keyword == "RUN"
    ]
    assert runs
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    for run_step in runs:
        command = run_step
        for image_path, local_path in paths.items():
            command = command.replace(image_path, local_path)
        result = subprocess.run(
            ["sh", "-c", command],
            cwd=context,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    pressured = bin_dir / "pressured"
    result = subprocess.run(
        [str(pressured), "--help"], capture_output=True, text=True, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout
    assert "status" in result.stdout
    # The venv's interpreter imports the installed copy, not the checkout.
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import pressured.ops; print(pressured.ops.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    ).stdout
    assert str(venv) in where
