"""Static checks of deploy/ and the Dockerfile (no cluster, no Docker engine): every manifest parses, and the
base and each overlay, rendered, keep the invariants a rollout depends on (probes on real routes, ports that
agree, the token from a Secret, pinned images, resources, non-root)."""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.app import create_app
from gateway.config import Config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BASE = K8S / "base"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
DOCKERFILE = ROOT / "Dockerfile"
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|PRIVATE_KEY", re.IGNORECASE)
PASSWORD_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
Doc = dict[str, Any]


def load_all(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def gateway_routes() -> set[str]:
    """The paths the gateway serves, read off the app (not started)."""
    paths = (getattr(route, "path", None) for route in create_app(Config()).routes)  # Route, Mount: .path
    return {path for path in paths if isinstance(path, str)}


# -- a small kustomize: resources, strategic-merge patches by path, replicas, images, namespace ----------


def merge(into: Doc, patch: Doc) -> None:
    """Strategic-merge `patch` into `into`: maps merge, lists of named maps merge by name, the rest replaces."""
    for key, value in patch.items():
        current = into.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merge(current, value)
        elif (isinstance(value, list) and isinstance(current, list)
              and all(isinstance(v, dict) and "name" in v for v in [*value, *current])):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    merge(by_name[item["name"]], item)
                else:
                    current.append(item)
        else:
            into[key] = copy.deepcopy(value)


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def render(directory: Path) -> list[Doc]:
    """What `kubectl kustomize directory` would print, for the features these manifests use."""
    k = load_all(directory / "kustomization.yaml")[0]
    docs: list[Doc] = []
    for resource in k.get("resources", []):
        path = directory / resource
        docs += render(path) if path.is_dir() else copy.deepcopy(load_all(path))
    for entry in k.get("patches", []):
        assert set(entry) == {"path"}, f"{directory}: only strategic-merge patches by path are checked here"
        for patch in load_all(directory / entry["path"]):
            merge(find(docs, patch["kind"], patch["metadata"]["name"]), patch)
    for entry in k.get("replicas", []):
        find(docs, "Deployment", entry["name"])["spec"]["replicas"] = entry["count"]
    for entry in k.get("images", []):
        for container in containers(docs):
            name, _, tag = container["image"].partition(":")
            if name == entry["name"]:
                container["image"] = f"{entry.get('newName', name)}:{entry.get('newTag', tag)}"
    if "namespace" in k:
        for doc in docs:
            doc["metadata"]["namespace"] = k["namespace"]
    return docs


def containers(docs: list[Doc]) -> Iterator[Doc]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec = doc["spec"]["template"]["spec"]
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


@dataclass
class Bundle:
    """The documents one kustomization renders to."""

    name: str
    docs: list[Doc]

    def kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def deployments(self) -> list[Doc]:
        return self.kind("Deployment")

    def gateway(self) -> Doc:
        """The gateway Deployment: the one whose container runs `serve`."""
        found = [d for d in self.deployments() if pod(d)["containers"][0].get("args", [""])[0] == "serve"]
        assert len(found) == 1, f"{self.name}: expected one Deployment running `gateway serve`"
        return found[0]

    def config(self) -> dict[str, str]:
        (config,) = [c for c in self.kind("ConfigMap") if c["metadata"]["name"] == "gateway-config"]
        data: dict[str, str] = config["data"]
        return data


def pod(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


def kubectl_render(directory: Path) -> list[Doc]:
    proc = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


KUBECTL = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (optional cross-check)")
BUNDLES = [
    pytest.param(("render", BASE), id="base"),
    *[pytest.param(("render", o), id=f"overlays/{o.name}") for o in OVERLAYS],
    *[pytest.param(("kubectl", o), id=f"kubectl:overlays/{o.name}", marks=KUBECTL) for o in OVERLAYS],
]


@pytest.fixture(params=BUNDLES, scope="module")
def bundle(request: pytest.FixtureRequest) -> Bundle:
    how, directory = request.param
    docs = render(directory) if how == "render" else kubectl_render(directory)
    return Bundle(f"{how}:{directory.relative_to(K8S)}", docs)


def port_names(container: Doc) -> set[object]:
    ports = container.get("ports", [])
    return {p["containerPort"] for p in ports} | {p["name"] for p in ports if "name" in p}


def probes(container: Doc) -> Iterator[tuple[str, Doc]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            yield kind, container[kind]


def cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return float(quantity[: -len(suffix)]) * factor
    return float(quantity) / 2**20


# -- files and kustomizations ---------------------------------------------------------------------------


YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


class TestFiles:
    @pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
    def test_every_yaml_document_parses_with_api_version_and_kind(self, path: Path) -> None:
        """Each YAML document under deploy/ parses to a mapping with apiVersion and kind."""
        docs = load_all(path)
        assert docs, f"{path} holds no document"
        for doc in docs:
            assert isinstance(doc, dict)
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: a document without apiVersion/kind"

    @pytest.mark.parametrize("directory", [BASE, *OVERLAYS], ids=lambda p: str(p.relative_to(K8S)))
    def test_kustomization_lists_only_existing_files(self, directory: Path) -> None:
        """Every resource and patch a kustomization names exists."""
        k = load_all(directory / "kustomization.yaml")[0]
        for resource in k.get("resources", []):
            path = directory / resource
            assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{directory}: missing {resource}"
        for entry in k.get("patches", []):
            assert (directory / entry["path"]).is_file(), f"{directory}: missing patch {entry['path']}"

    def test_every_base_manifest_is_listed_except_examples(self) -> None:
        """The base kustomization lists each manifest beside it, and not secret.example.yaml."""
        listed = set(load_all(BASE / "kustomization.yaml")[0]["resources"])
        on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
        assert listed == {n for n in on_disk if not n.endswith(".example.yaml")}
        assert "secret.example.yaml" in on_disk

    @pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
    def test_overlay_references_the_base(self, overlay: Path) -> None:
        """Each overlay builds on ../../base and sets its own namespace."""
        k = load_all(overlay / "kustomization.yaml")[0]
        assert "../../base" in k["resources"]
        assert k.get("namespace")

    @pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
    def test_overlay_patches_target_base_objects(self, overlay: Path) -> None:
        """Every patch and replicas entry of an overlay names an object the base defines."""
        base = render(BASE)
        k = load_all(overlay / "kustomization.yaml")[0]
        for entry in k.get("patches", []):
            for patch in load_all(overlay / entry["path"]):
                find(base, patch["kind"], patch["metadata"]["name"])
        for entry in k.get("replicas", []):
            find(base, "Deployment", entry["name"])

    def test_overlays_exist(self) -> None:
        """There is a dev and a prod overlay."""
        assert {o.name for o in OVERLAYS} >= {"dev", "prod"}

    def test_secret_example_holds_only_placeholders(self) -> None:
        """secret.example.yaml is a template: its values are placeholders and its keys are the ones referenced."""
        (secret,) = load_all(BASE / "secret.example.yaml")
        assert secret["kind"] == "Secret" and "data" not in secret
        assert all("REPLACE_ME" in value for value in secret["stringData"].values())
        referenced = {
            env["valueFrom"]["secretKeyRef"]["key"]
            for c in containers(render(BASE)) for env in c.get("env", []) if "secretKeyRef" in env.get("valueFrom", {})
        }
        assert referenced == set(secret["stringData"])


# -- invariants of each rendered bundle ------------------------------------------------------------------


class TestBundle:
    def test_probe_paths_are_gateway_routes(self, bundle: Bundle) -> None:
        """The gateway's readiness, liveness and startup probes, and the scrape path, are routes of the app."""
        routes = gateway_routes()
        container = pod(bundle.gateway())["containers"][0]
        paths = {kind: probe["httpGet"]["path"] for kind, probe in probes(container)}
        assert paths["readinessProbe"] == "/v2/health/ready"
        assert paths["livenessProbe"] == "/v2/health/live"
        assert "startupProbe" in paths
        assert set(paths.values()) <= routes
        annotations = bundle.gateway()["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] in routes

    def test_probe_ports_name_container_ports(self, bundle: Bundle) -> None:
        """Every probe's port is a port (by name or number) its container declares."""
        for container in containers(bundle.docs):
            for kind, probe in probes(container):
                action = probe.get("httpGet") or probe.get("tcpSocket")
                assert action is not None, f"{container['name']}.{kind}: no httpGet or tcpSocket"
                assert action["port"] in port_names(container), f"{container['name']}.{kind}: port {action['port']}"

    def test_gateway_port_agrees_with_config_and_scrape_annotation(self, bundle: Bundle) -> None:
        """GATEWAY_PORT, the container's http port and prometheus.io/port are one number."""
        deployment = bundle.gateway()
        (port,) = [p["containerPort"] for p in pod(deployment)["containers"][0]["ports"] if p["name"] == "http"]
        assert int(bundle.config()["GATEWAY_PORT"]) == port
        assert int(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]) == port

    def test_services_select_one_deployment_and_target_its_port(self, bundle: Bundle) -> None:
        """Each Service's selector matches exactly one Deployment's pods, and its targetPort is one of their ports."""
        for service in bundle.kind("Service"):
            selector = service["spec"]["selector"]
            matching = [d for d in bundle.deployments()
                        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
            assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)} Deployments"
            ports = set().union(*(port_names(c) for c in pod(matching[0])["containers"]))
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in ports

    def test_deployment_selectors_match_their_pod_labels(self, bundle: Bundle) -> None:
        """Each Deployment's selector is a subset of its pod template's labels."""
        for d in bundle.deployments():
            assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()

    def test_admin_token_comes_from_a_secret_and_nothing_secret_is_inlined(self, bundle: Bundle) -> None:
        """GATEWAY_ADMIN_TOKEN is a secretKeyRef everywhere, no Secret is rendered, and no secret-looking value is inline."""
        assert not bundle.kind("Secret"), "Secrets are created out of band, not shipped in the kustomization"
        gateway_env = {e["name"]: e for e in pod(bundle.gateway())["containers"][0]["env"]}
        assert "secretKeyRef" in gateway_env["GATEWAY_ADMIN_TOKEN"]["valueFrom"]
        for container in containers(bundle.docs):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], f"{env['name']} is inlined"
        for config in bundle.kind("ConfigMap"):
            for key, value in config.get("data", {}).items():
                assert not SECRET_NAME.search(key), f"ConfigMap key {key} looks secret"
                assert not PASSWORD_IN_URL.search(str(value)), f"ConfigMap {key} has a password in a URL"

    def test_images_are_pinned(self, bundle: Bundle) -> None:
        """Every image names a tag (or digest) other than latest."""
        for container in containers(bundle.docs):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert "@sha256:" in image or (tag and tag != "latest"), f"{container['name']}: {image} is not pinned"

    def test_resources_are_set(self, bundle: Bundle) -> None:
        """Every container requests and limits cpu and memory, with requests no larger than limits."""
        for container in containers(bundle.docs):
            resources = container["resources"]
            for what in ("cpu", "memory"):
                assert what in resources["requests"] and what in resources["limits"], f"{container['name']}: {what}"
            assert cores(resources["requests"]["cpu"]) <= cores(resources["limits"]["cpu"])
            assert mebibytes(resources["requests"]["memory"]) <= mebibytes(resources["limits"]["memory"])

    def test_pods_run_as_non_root_on_a_read_only_root(self, bundle: Bundle) -> None:
        """Pods run as a non-zero UID with runAsNonRoot, no privilege escalation, a read-only root and no capabilities."""
        for d in bundle.deployments():
            spec = pod(d)
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] > 0
            for container in spec["containers"]:
                sc = container["securityContext"]
                assert sc["runAsNonRoot"] is True
                assert sc["allowPrivilegeEscalation"] is False
                assert sc["readOnlyRootFilesystem"] is True
                assert sc["capabilities"]["drop"] == ["ALL"]

    def test_data_dir_and_tmp_are_writable_volumes(self, bundle: Bundle) -> None:
        """With a read-only root, GATEWAY_DATA_DIR and /tmp are mounted volumes; the gateway's data dir is an emptyDir."""
        data_dir = bundle.config()["GATEWAY_DATA_DIR"]
        for d in bundle.deployments():
            volumes = {v["name"]: v for v in pod(d)["volumes"]}
            mounts = {m["mountPath"]: m["name"] for m in pod(d)["containers"][0]["volumeMounts"]}
            assert data_dir in mounts and "/tmp" in mounts
            if d is bundle.gateway():
                assert "emptyDir" in volumes[mounts[data_dir]]

    def test_cpu_limit_fits_the_threads(self, bundle: Bundle) -> None:
        """One onnxruntime thread per inference, and workers x inference threads fit the gateway's CPU limit."""
        config = bundle.config()
        assert config["GATEWAY_INTRA_OP_THREADS"] == "1"
        threads = int(config["GATEWAY_WORKERS"]) * int(config["GATEWAY_INFERENCE_THREADS"])
        limit = cores(pod(bundle.gateway())["containers"][0]["resources"]["limits"]["cpu"])
        assert threads <= limit, f"{threads} inference threads on a {limit}-core limit"

    def test_termination_grace_covers_pre_stop_and_graceful_timeout(self, bundle: Bundle) -> None:
        """terminationGracePeriodSeconds exceeds the preStop sleep plus GATEWAY_GRACEFUL_TIMEOUT."""
        spec = pod(bundle.gateway())
        command = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        drain = float(command[1]) + float(bundle.config()["GATEWAY_GRACEFUL_TIMEOUT"])
        assert spec["terminationGracePeriodSeconds"] > drain

    def test_hpa_scales_the_gateway_on_cpu(self, bundle: Bundle) -> None:
        """The autoscaling/v2 HPA targets the gateway Deployment by name, on CPU, with min <= max."""
        (hpa,) = bundle.kind("HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", bundle.gateway()["metadata"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        assert bundle.gateway()["spec"]["replicas"] >= hpa["spec"]["minReplicas"]

    def test_pdb_selects_the_gateway_pods(self, bundle: Bundle) -> None:
        """The PodDisruptionBudget's selector matches the gateway's pod labels and no other Deployment's."""
        (pdb,) = bundle.kind("PodDisruptionBudget")
        selector = pdb["spec"]["selector"]["matchLabels"]
        matching = [d["metadata"]["name"] for d in bundle.deployments()
                    if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matching == [bundle.gateway()["metadata"]["name"]]

    def test_registry_deployment_runs_registry_serve_on_its_port(self, bundle: Bundle) -> None:
        """A Deployment runs `gateway registry serve` with --host/--port/--registry, its port the declared one."""
        found = [d for d in bundle.deployments() if pod(d)["containers"][0]["args"][:2] == ["registry", "serve"]]
        assert len(found) == 1
        container = pod(found[0])["containers"][0]
        args = container["args"]
        flags = dict(zip(args[2::2], args[3::2], strict=True))
        assert flags.keys() >= {"--host", "--port", "--registry"}
        assert int(flags["--port"]) in port_names(container)
        assert flags["--registry"] == "$(GATEWAY_REGISTRY_URL)"

    def test_gateway_fetches_artifacts_from_the_registry_service(self, bundle: Bundle) -> None:
        """GATEWAY_ARTIFACT_SOURCE names the Service in front of `registry serve`, on that Service's port, whose
        targetPort is the registry's --port; the value is one Config accepts."""
        env = {e["name"]: e for e in pod(bundle.gateway())["containers"][0]["env"]}
        value = env["GATEWAY_ARTIFACT_SOURCE"]["value"]
        assert Config(artifact_source=value).artifact_source == value
        url = urlsplit(value)
        assert url.scheme == "http" and url.path in ("", "/")
        service = find(bundle.docs, "Service", str(url.hostname))
        selector = service["spec"]["selector"]
        (registry,) = [d for d in bundle.deployments()
                       if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        container = pod(registry)["containers"][0]
        assert container["args"][:2] == ["registry", "serve"]
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
        flags = dict(zip(container["args"][2::2], container["args"][3::2], strict=True))
        by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert by_name.get(port["targetPort"], port["targetPort"]) == int(flags["--port"])

    def test_registry_keeps_its_artifacts_on_the_pvc(self, bundle: Bundle) -> None:
        """The registry's data dir (where its artifact store lives) is a mounted PersistentVolumeClaim of the bundle;
        the gateway's stays an emptyDir cache."""
        (registry,) = [d for d in bundle.deployments() if pod(d)["containers"][0]["args"][:2] == ["registry", "serve"]]
        data_dir = bundle.config()["GATEWAY_DATA_DIR"]
        for deployment, kind in ((registry, "persistentVolumeClaim"), (bundle.gateway(), "emptyDir")):
            (mount,) = [m for m in pod(deployment)["containers"][0]["volumeMounts"] if m["mountPath"] == data_dir]
            (volume,) = [v for v in pod(deployment)["volumes"] if v["name"] == mount["name"]]
            assert kind in volume
        claim = next(v for v in pod(registry)["volumes"] if "persistentVolumeClaim" in v)["persistentVolumeClaim"]
        find(bundle.docs, "PersistentVolumeClaim", claim["claimName"])


# -- Dockerfile -------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str


def dockerfile() -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        logical.append(pending)
        pending = ""
    out = []
    for line in logical:
        keyword, _, value = line.strip().partition(" ")
        out.append(Instruction(keyword.upper(), value.strip()))
    return out


def stages() -> list[list[Instruction]]:
    """Instructions grouped by FROM; ARGs before the first FROM are stage 0's prelude."""
    groups: list[list[Instruction]] = [[]]
    for ins in dockerfile():
        if ins.keyword == "FROM":
            groups.append([])
        groups[-1].append(ins)
    return groups


def base_images() -> list[str]:
    """Each stage's base with ARG defaults substituted."""
    args = dict(
        ins.value.split("=", 1) for ins in stages()[0] if ins.keyword == "ARG" and "=" in ins.value
    )
    images = []
    for stage in stages()[1:]:
        image = stage[0].value.split()[0]
        images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image))
    return images


def final_stage() -> list[Instruction]:
    return stages()[-1]


def exec_form(ins: Instruction) -> list[str]:
    value = ins.value
    if value.startswith("CMD "):  # HEALTHCHECK [options] CMD ...
        value = value[4:]
    parsed = yaml.safe_load(value) if value.startswith("[") else shlex.split(value)
    assert isinstance(parsed, list)
    return [str(p) for p in parsed]


class TestDockerfile:
    def test_base_is_a_pinned_slim_python(self) -> None:
        """Every stage starts from python:<major>.<minor>.<patch>-slim..., never latest or a bare minor version."""
        for image in base_images():
            assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image

    def test_is_multi_stage_on_one_base(self) -> None:
        """A builder stage and a final stage, both from the same base image."""
        images = base_images()
        assert len(images) >= 2 and len(set(images)) == 1
        assert re.search(r"\bAS\s+builder\b", stages()[1][0].value, re.IGNORECASE)
        assert any(i.keyword == "COPY" and i.value.startswith("--from=builder") for i in final_stage())

    def test_copies_every_package_of_the_project(self) -> None:
        """The builder copies each top-level package that pyproject.toml installs."""
        pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
        packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
        copied = {i.value.split()[0] for i in stages()[1] if i.keyword == "COPY"}
        assert packages <= copied

    def test_final_stage_runs_as_a_numeric_non_root_user(self) -> None:
        """The final stage's USER is a numeric UID (and GID) other than 0."""
        users = [i.value for i in final_stage() if i.keyword == "USER"]
        assert users, "no USER in the final stage"
        assert re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), users[-1]

    def test_final_stage_installs_no_build_tools(self) -> None:
        """No compiler or build package is installed in the final stage."""
        text = " ".join(f"{i.keyword} {i.value}" for i in final_stage())
        for tool in ("gcc", "g++", "build-essential", "make ", "clang", "python3-dev", "libpq-dev", "apt-get install"):
            assert tool not in text, f"{tool!r} in the final stage"

    def test_healthcheck_probes_liveness_with_python(self) -> None:
        """HEALTHCHECK runs python (slim has no curl) against /v2/health/live, a route of the gateway."""
        (check,) = [i for i in final_stage() if i.keyword == "HEALTHCHECK"]
        command = exec_form(Instruction("HEALTHCHECK", check.value[check.value.index("CMD "):]))
        assert command[0] in ("python", "python3")
        assert "/v2/health/live" in " ".join(command) and "/v2/health/live" in gateway_routes()
        assert "curl" not in check.value and "wget" not in check.value

    def test_entrypoint_is_gateway_serving_on_all_interfaces(self) -> None:
        """ENTRYPOINT ["gateway"] with CMD ["serve", "--host", "0.0.0.0"], both exec form."""
        (entrypoint,) = [i for i in final_stage() if i.keyword == "ENTRYPOINT"]
        (cmd,) = [i for i in final_stage() if i.keyword == "CMD"]
        assert exec_form(entrypoint) == ["gateway"]
        assert exec_form(cmd) == ["serve", "--host", "0.0.0.0"]

    def test_port_and_data_dir_agree_with_the_manifests(self) -> None:
        """EXPOSE, ENV GATEWAY_PORT and the gateway's containerPort agree; GATEWAY_DATA_DIR is /data in both."""
        env = " ".join(i.value for i in final_stage() if i.keyword == "ENV")
        assert "GATEWAY_PORT=8000" in env and "GATEWAY_DATA_DIR=/data" in env
        (expose,) = [i.value for i in final_stage() if i.keyword == "EXPOSE"]
        base = Bundle("base", render(BASE))
        assert expose == "8000" == base.config()["GATEWAY_PORT"]
        assert base.config()["GATEWAY_DATA_DIR"] == "/data"

    def test_no_secrets_are_baked_in(self) -> None:
        """No ENV or ARG sets a token, password or key, and GATEWAY_ADMIN_TOKEN is only documented."""
        for ins in dockerfile():
            if ins.keyword in ("ENV", "ARG"):
                for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", ins.value):
                    assert not SECRET_NAME.search(name), f"{ins.keyword} {name}= bakes a secret into the image"
            assert "GATEWAY_ADMIN_TOKEN" not in ins.value, f"{ins.keyword} mentions the admin token"
        assert "GATEWAY_ADMIN_TOKEN" in DOCKERFILE.read_text(), "the comments must say the token is required"

    def test_dockerignore_keeps_local_state_out_of_the_context(self) -> None:
        """.dockerignore excludes the venv, the embedded registry, git and tool caches."""
        entries = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
        assert {".venv", ".gateway", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", "**/__pycache__"} <= entries
