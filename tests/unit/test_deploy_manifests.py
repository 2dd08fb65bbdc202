"""deploy/compose and deploy/kubernetes: generated from the local configs, valid against their schemas.

Neither Docker nor Kubernetes runs here. What is checked: the compose file against the compose-spec
schema (check-jsonschema), core Kubernetes objects against the Kubernetes OpenAPI schemas in strict
mode (kubernetes-validate), custom resources against the structural schemas in
deploy/kubernetes/schemas, the embedded Prometheus and Alertmanager configs with promtool and amtool,
and the references between files (ports, labels, secrets, mounts).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from gradwatch import deploy_manifests
from tests.integration.external import binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S = ROOT / "deploy" / "kubernetes"
#: Oldest and newest Kubernetes minor versions the core objects must validate against.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
CORE_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1"}
DASHBOARD_PROVIDER_PATH = "/var/lib/grafana/dashboards/gradwatch"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _flags(command: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def _token_secret() -> dict[str, Any]:
    # What `kustomize build` makes of the secretGenerator (the value is a placeholder: never committed).
    generator = _kustomization()["secretGenerator"][0]
    keys = [spec.split("=", 1)[0] for spec in generator["files"]]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": generator["name"], "namespace": deploy_manifests.NAMESPACE},
        "type": "Opaque",
        "data": {key: "cGxhY2Vob2xkZXI=" for key in keys},
    }


def _resources() -> list[dict[str, Any]]:
    documents = []
    for name in _kustomization()["resources"]:
        documents += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return documents


def _one(kind: str) -> dict[str, Any]:
    (found,) = [d for d in _resources() if d["kind"] == kind]
    return found


def _crd_schema(document: dict[str, Any]) -> dict[str, Any] | None:
    group_version = document["apiVersion"].replace("/", "-")
    path = K8S / "schemas" / f"{document['kind'].lower()}-{group_version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _crd_errors(document: dict[str, Any]) -> list[str]:
    schema = _crd_schema(document)
    assert schema is not None, f"no schema for {document['apiVersion']} {document['kind']}"
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


# --- generated files -----------------------------------------------------------------------------------


def test_committed_deploy_manifests_are_generated_from_the_local_configs():
    assert deploy_manifests.stale(ROOT) == [], "regenerate: python -m gradwatch.deploy_manifests"


def test_check_mode_reports_a_stale_file(tmp_path):
    for name in ("deploy", "dashboards"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, tmp_path / name)
    assert deploy_manifests.main(["--root", str(tmp_path), "--check"]) == 0
    rules = tmp_path / "deploy/prometheus/rules/gradwatch.rules.yml"
    rules.write_text(rules.read_text().replace("severity: critical", "severity: page", 1))
    assert deploy_manifests.main(["--root", str(tmp_path), "--check"]) == 1
    assert deploy_manifests.stale(tmp_path) == ["deploy/kubernetes/generated/prometheusrule.yaml"]


def test_every_dashboard_becomes_a_sidecar_configmap_and_a_kustomize_resource(tmp_path):
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    (tmp_path / "dashboards").mkdir()
    assert "grafana-dashboards" not in deploy_manifests.kustomization(tmp_path)  # none: no empty resource file
    dashboards = {"gradwatch-run.json": {"uid": "run", "title": "Run"}, "gradwatch-layers.json": {"uid": "layers"}}
    for name, body in dashboards.items():
        (tmp_path / "dashboards" / name).write_text(json.dumps(body, indent=2) + "\n")
    maps = list(yaml.safe_load_all(deploy_manifests.grafana_dashboards(tmp_path)))
    assert [m["metadata"]["name"] for m in maps] == [
        "gradwatch-dashboard-gradwatch-layers",
        "gradwatch-dashboard-gradwatch-run",
    ]
    for configmap in maps:
        ((key, text),) = configmap["data"].items()
        assert text == (tmp_path / "dashboards" / key).read_text()  # byte for byte
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        kubernetes_validate.validate(configmap, K8S_VERSIONS[-1], strict=True)
    assert "generated/grafana-dashboards.yaml" in yaml.safe_load(deploy_manifests.kustomization(tmp_path))["resources"]
    (tmp_path / "dashboards" / "broken.json").write_text("{")
    with pytest.raises(json.JSONDecodeError):
        deploy_manifests.grafana_dashboards(tmp_path)


def test_committed_dashboards_are_all_in_configmaps():
    files = {p.name: p.read_text() for p in sorted((ROOT / "dashboards").glob("*.json"))}
    maps = [d for d in _resources() if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]
    assert {k: v for m in maps for k, v in m["data"].items()} == files


def test_dashboards_and_datasource_configmap_agree_on_the_datasource_uid():
    (configmap,) = [d for d in _resources() if d["metadata"]["name"] == "gradwatch-grafana-datasource"]
    uids = {s["uid"] for text in configmap["data"].values() for s in yaml.safe_load(text)["datasources"]}
    local = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert uids == {s["uid"] for s in local["datasources"]}
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        used = set(re.findall(r'"uid":\s*"([^"]+)"', path.read_text())) & {"gradwatch-prometheus"}
        assert used <= uids, path.name


# --- docker compose ------------------------------------------------------------------------------------


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )


def test_compose_file_matches_the_compose_spec(tmp_path):
    result = _check_jsonschema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator does reject a misspelt key (it is not accepting everything).
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    command:\n", "    comand:\n", 1))
    assert _check_jsonschema(broken).returncode != 0


def test_compose_mounts_exist_and_prometheus_and_alertmanager_accept_the_mounted_layout(tmp_path):
    compose = _compose()
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                host = (COMPOSE_DIR / source).resolve()
                # dashboards/ may be empty or absent (Docker creates it); everything else must exist.
                assert host.exists() or target == DASHBOARD_PROVIDER_PATH, volume
                if host.exists():
                    destination = tmp_path / target.lstrip("/")
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    (shutil.copytree if host.is_dir() else shutil.copy)(host, destination)

    prometheus = _flags(compose["services"]["prometheus"]["command"])
    config = tmp_path / prometheus["config.file"].lstrip("/")
    check = subprocess.run([binary("promtool"), "check", "config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rule_files = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
    assert f"SUCCESS: {len(rule_files)} rule files found" in check.stdout  # the rules were mounted where it looks
    for path in rule_files:
        count = sum(len(g["rules"]) for g in yaml.safe_load(path.read_text())["groups"])
        assert f"SUCCESS: {count} rules found" in check.stdout

    alertmanager = _flags(compose["services"]["alertmanager"]["command"])
    config = tmp_path / alertmanager["config.file"].lstrip("/")
    check = subprocess.run([binary("amtool"), "check-config", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    templates = len(list((ROOT / "deploy/alertmanager/templates").glob("*.tmpl")))
    assert f"{templates} templates" in check.stdout  # the templates were mounted next to the config


def test_compose_services_point_at_each_other():
    compose = _compose()
    services = compose["services"]
    gradwatch = _flags(services["gradwatch"]["command"])
    assert gradwatch["host"] == "0.0.0.0"
    # The token: a declared compose secret, mounted where --token-file reads it, from a git-ignored file.
    (secret,) = services["gradwatch"]["secrets"]
    assert gradwatch["token-file"] == f"/run/secrets/{secret}"
    secret_file = compose["secrets"][secret]["file"]
    ignored = subprocess.run(["git", "check-ignore", "-q", str(COMPOSE_DIR / secret_file)], cwd=ROOT)
    assert ignored.returncode == 0, f"{secret_file} must be git-ignored"
    assert services["gradwatch"]["ports"] == [f"{gradwatch['port']}:{gradwatch['port']}"]
    assert f":{gradwatch['port']}/healthz" in " ".join(services["gradwatch"]["healthcheck"]["test"])
    assert gradwatch["alertmanager"] == "http://alertmanager:9093"

    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    (scrape,) = prometheus["scrape_configs"]
    assert scrape["static_configs"][0]["targets"] == [f"gradwatch:{gradwatch['port']}"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]

    # Grafana: provisioning as in deploy/grafana, dashboards where the file provider reads them.
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert (COMPOSE_DIR / grafana["/etc/grafana/provisioning"]).resolve() == ROOT / "deploy/grafana/provisioning"
    assert (COMPOSE_DIR / grafana[DASHBOARD_PROVIDER_PATH]).resolve() == ROOT / "dashboards"
    for provider_file in (ROOT / "deploy/grafana/provisioning/dashboards").glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            assert provider["options"]["path"] in grafana, provider_file.name
    datasources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"

    build = services["gradwatch"]["build"]
    assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == COMPOSE_DIR / "Dockerfile"


def test_dockerfile_pins_cpu_torch_and_the_ray_version_of_the_raycluster():
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "\nFROM python:3.11-slim\n" in dockerfile
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile and "--index-url https://download.pytorch.org/whl/cpu" in dockerfile
    (ray_version,) = re.findall(r"ARG RAY_VERSION=(\S+)", dockerfile)
    assert _one("RayCluster")["spec"]["rayVersion"] == ray_version
    assert re.search(r"pip install \. ", dockerfile)


# --- Kubernetes ----------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_file():
    listed = set(_kustomization()["resources"])
    on_disk = {p.relative_to(K8S).as_posix() for p in [*K8S.glob("*.yaml"), *K8S.glob("generated/*.yaml")]}
    empty = {n for n in on_disk if not any(yaml.safe_load_all((K8S / n).read_text()))}
    assert listed == on_disk - {"kustomization.yaml"} - empty


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_resources_validate_strictly_against_the_kubernetes_schemas(version):
    core = [d for d in [*_resources(), _token_secret()] if d["apiVersion"] in CORE_API_VERSIONS]
    assert {d["kind"] for d in core} >= {"Namespace", "Service", "ConfigMap", "Secret"}
    for document in core:
        kubernetes_validate.validate(document, version, strict=True)
    # Strict mode does reject an unknown field.
    service = json.loads(json.dumps(_one("Service")))
    service["spec"]["selectors"] = service["spec"].pop("selector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_raycluster_pod_templates_are_valid_core_pod_templates(version):
    spec = _one("RayCluster")["spec"]
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    for group in groups:
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": group["template"],
        }
        kubernetes_validate.validate(pod_template, version, strict=True)
    for worker in spec.get("workerGroupSpecs", []):
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]


def test_every_ray_container_inlines_report_batches_as_a_local_serve_does():
    from gradwatch.service.server import INLINE_CALL_BYTES

    spec = _one("RayCluster")["spec"]
    for group in [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            assert env.get("RAY_max_direct_call_object_size") == str(INLINE_CALL_BYTES), container["name"]


def test_every_custom_resource_matches_its_structural_schema():
    custom = [d for d in _resources() if d["apiVersion"] not in CORE_API_VERSIONS]
    assert {d["kind"] for d in custom} == {"RayCluster", "ServiceMonitor", "PrometheusRule"}
    for document in custom:
        assert _crd_errors(document) == [], document["kind"]


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        ("RayCluster", lambda d: d["spec"].pop("headGroupSpec"), "'headGroupSpec' is a required property"),
        ("RayCluster", lambda d: d["spec"]["headGroupSpec"].update(serviceType="Internal"), "is not one of"),
        ("RayCluster", lambda d: d["spec"].update(workerGroupSpec=[]), "Additional properties"),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(interval="5 s"), "does not match"),
        ("ServiceMonitor", lambda d: d["spec"].pop("selector"), "'selector' is a required property"),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].pop("expr"), "'expr' is a required property"),
        ("PrometheusRule", lambda d: d["spec"]["groups"][0]["rules"][0].update(record="x"), "is valid under each of"),
    ],
)
def test_the_structural_schemas_reject_broken_custom_resources(kind, mutate, message):
    document = json.loads(json.dumps(_one(kind)))
    mutate(document)
    assert any(message in error for error in _crd_errors(document)), _crd_errors(document)


def test_prometheusrule_groups_are_the_rule_files_and_promtool_accepts_them(tmp_path):
    rule = _one("PrometheusRule")
    local = [
        g
        for p in sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
        for g in yaml.safe_load(p.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == local
    extracted = tmp_path / "prometheusrule.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    check = subprocess.run([binary("promtool"), "check", "rules", str(extracted)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{sum(len(g['rules']) for g in local)} rules found" in check.stdout


def test_alertmanager_secret_passes_amtool_with_its_templates(tmp_path):
    secret = _one("Secret")
    assert secret["metadata"]["name"] == f"alertmanager-{deploy_manifests.K8S_ALERTMANAGER_NAME}"
    files = secret["stringData"]
    for name, text in files.items():  # laid out flat, as the operator mounts the Secret's keys
        (tmp_path / name).write_text(text.replace(deploy_manifests.K8S_ALERTMANAGER_CONFIG_DIR, str(tmp_path)))
    check = subprocess.run(
        [binary("amtool"), "check-config", str(tmp_path / "alertmanager.yaml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{sum(n.endswith('.tmpl') for n in files)} templates" in check.stdout
    local = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    assert {k: v for k, v in yaml.safe_load(files["alertmanager.yaml"]).items() if k != "templates"} == {
        k: v for k, v in local.items() if k != "templates"
    }


def test_kubernetes_objects_refer_to_each_other_correctly():
    cluster, service, monitor = _one("RayCluster"), _one("Service"), _one("ServiceMonitor")
    for document in _resources():
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == deploy_manifests.NAMESPACE, document["metadata"]["name"]
    # The Service selects the head pod by the labels KubeRay puts on it.
    assert service["spec"]["selector"] == {"ray.io/cluster": cluster["metadata"]["name"], "ray.io/node-type": "head"}
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    (container,) = head["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (http,) = service["spec"]["ports"]
    assert ports[http["targetPort"]] == http["port"]
    script = container["args"][0]
    assert f"--port={http['port']}" in script and "--host=0.0.0.0" in script and "--address=auto" in script
    assert cluster["metadata"]["annotations"]["ray.io/overwrite-container-cmd"] == "true"
    assert "${KUBERAY_GEN_RAY_START_CMD//--block/}" in script and "exec gradwatch serve" in script
    assert subprocess.run(["bash", "-n", "-c", script]).returncode == 0  # the shell can parse it
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": http["targetPort"]}
    # The token: the kustomize-generated Secret, mounted where --token-file reads it.
    (token_file,) = re.findall(r"--token-file=(\S+)", script)
    secret = _token_secret()
    volumes = {v["name"]: v for v in head["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if volumes[m["name"]].get("secret")]
    assert volumes[mount["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    assert token_file == f"{mount['mountPath']}/{next(iter(secret['data']))}"
    assert (
        (K8S / ".gitignore")
        .read_text()
        .count(_kustomization()["secretGenerator"][0]["files"][0].split("=")[1].split("/")[0])
    )
    # The ServiceMonitor finds the Service and scrapes its named port.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [deploy_manifests.NAMESPACE]
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {http["name"]}
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}
