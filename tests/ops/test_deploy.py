"""The deploy files stay consistent with the code.

- The compose file and every Kubernetes manifest parse as YAML.
- Every variable they (and the Dockerfile) set is a setting of `bot/config.py` and is
  documented in `.env.example`.
- Ports and probe paths are the ones the code serves, for the settings each
  Deployment runs with (`bot.ops.health.serving_port`), and grace periods outlast
  `SHUTDOWN_GRACE_SECONDS`.
- Selectors, kustomize resources, the lock file and the Dockerfile fit together.
- Every Kubernetes manifest is valid against the newest Kubernetes schemas that
  `kubernetes-validate` ships (offline, strict: unknown fields are errors).
- The gateway StatefulSet gives each pod its own Discord shard, all of them together.

PyYAML is not a dependency of the project; when it is importable it parses the files,
else `mini_yaml` below does: a strict parser of the block-YAML subset the deploy files
are written in, which raises on anything outside it (so it is a real syntax check).
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import load_settings
from bot.ops.health import HEALTHZ, METRICS, READYZ, serving_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
LOCK = DEPLOY / "requirements.lock"
ENV_EXAMPLE = ROOT / ".env.example"

# Variables the Dockerfile sets for Python and pip, not settings of the bot.
RUNTIME_ENV = re.compile(r"PATH|PYTHON[A-Z_]+|PIP_[A-Z_]+")

# Stand-ins for the Secret's values, shaped so the settings validate.
FAKE_SECRETS = {
    "TOGETHER_API_KEY": "test-key",
    "REDIS_URL": "redis://:test@chatbot-redis:6379/0",
    "SLACK_BOT_TOKEN": "xoxb-test",
    "SLACK_APP_TOKEN": "xapp-test",
    "SLACK_SIGNING_SECRET": "test-signing-secret",
    "DISCORD_BOT_TOKEN": "discord-test-token",
}


# ---- a strict parser for the YAML subset of the deploy files ----------------------------


class YamlSubsetError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and (i == 0 or line[i - 1] in " [,:"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    if quote:
        raise YamlSubsetError(f"unclosed quote in {line!r}")
    return line.rstrip()


def _split_flow(text: str) -> list[str]:
    items, current, quote = [], "", ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            current += ch
        elif ch == ",":
            items.append(current.strip())
            current = ""
        elif ch in "[]{}":
            raise YamlSubsetError(f"nested flow collection in {text!r}")
        else:
            current += ch
    if current.strip():
        items.append(current.strip())
    return items


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        if not text.endswith('"') or len(text) < 2:
            raise YamlSubsetError(f"bad double-quoted scalar {text!r}")
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise YamlSubsetError(f"bad single-quoted scalar {text!r}")
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        if not text.endswith("]"):
            raise YamlSubsetError(f"unclosed flow sequence {text!r}")
        return [_scalar(item) for item in _split_flow(text[1:-1])]
    if text == "{}":
        return {}
    if text[0] in "{&*!|>%@`":
        raise YamlSubsetError(f"unsupported YAML construct {text!r}")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~"):
        return None
    return text


def _key_value(content: str) -> tuple[str, str]:
    match = re.fullmatch(r"""("[^"]*"|'[^']*'|[^\s"'#][^:]*?)\s*:(?:\s+(.*))?""", content)
    if match is None:
        raise YamlSubsetError(f"expected 'key: value', got {content!r}")
    key = match.group(1)
    return (str(_scalar(key)) if key[0] in "\"'" else key), (match.group(2) or "")


def mini_yaml(text: str) -> Any:
    """Parse one YAML document of block mappings, block sequences and plain, quoted or
    simple flow scalars; raise `YamlSubsetError` on anything else."""
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"tab in indentation: {raw!r}")
        if raw.strip() == "---":
            raise YamlSubsetError("one document per file")
        line = _strip_comment(raw)
        if line.strip():
            lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise YamlSubsetError(f"unexpected indentation at {lines[end][1]!r}")
    return value


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1] == "-" or lines[i][1].startswith("- "):
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


def _sequence(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
        rest = lines[i][1][1:].lstrip(" ")
        if not rest:
            if i + 1 >= len(lines) or lines[i + 1][0] <= indent:
                raise YamlSubsetError("empty sequence item")
            value, i = _block(lines, i + 1, lines[i + 1][0])
        elif re.match(r"""("[^"]*"|'[^']*'|[^\s"'\[][^:]*?)\s*:(\s|$)""", rest):
            # "- key: value" opens a mapping indented past the dash.
            inner = indent + len(lines[i][1]) - len(rest)
            value, i = _mapping([*lines[:i], (inner, rest), *lines[i + 1 :]], i, inner)
        else:
            value, i = _scalar(rest), i + 1
        items.append(value)
    return items, i


def _mapping(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        if lines[i][1].startswith("- "):
            raise YamlSubsetError(f"sequence item inside a mapping: {lines[i][1]!r}")
        key, rest = _key_value(lines[i][1])
        if key in result:
            raise YamlSubsetError(f"duplicate key {key!r}")
        i += 1
        if rest:
            result[key] = _scalar(rest)
        elif i < len(lines) and (
            lines[i][0] > indent or (lines[i][0] == indent and lines[i][1].startswith("- "))
        ):
            result[key], i = _block(lines, i, lines[i][0])
        else:
            result[key] = None
    if i < len(lines) and lines[i][0] > indent:
        raise YamlSubsetError(f"unexpected indentation at {lines[i][1]!r}")
    return result, i


def load_yaml(path: Path) -> Any:
    text = path.read_text()
    try:
        import yaml
    except ImportError:
        return mini_yaml(text)
    parsed = yaml.safe_load(text)
    # Keep the fallback honest: where PyYAML exists, both must read the same thing.
    assert mini_yaml(text) == parsed, f"mini_yaml disagrees with PyYAML on {path}"
    return parsed


# ---- what the code says -----------------------------------------------------------------


def setting_names() -> set[str]:
    """Every environment name bot/config.py reads (each appears there as a string literal)."""
    tree = ast.parse((ROOT / "bot" / "config.py").read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+", node.value)
    }


def documented_names() -> set[str]:
    """Names `.env.example` documents, set (`NAME=`) or commented out (`# NAME=`)."""
    if not ENV_EXAMPLE.exists():
        pytest.skip(".env.example does not exist yet (the core writes it)")
    pattern = re.compile(r"^\s*#?\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=", re.MULTILINE)
    return set(pattern.findall(ENV_EXAMPLE.read_text()))


# ---- what the deploy files say ----------------------------------------------------------


def manifests() -> dict[str, Any]:
    return {path.name: load_yaml(path) for path in sorted(K8S.glob("*.yaml"))}


def by_kind(kind: str) -> Iterator[dict[str, Any]]:
    for doc in manifests().values():
        if doc.get("kind") == kind:
            yield doc


def workloads() -> dict[str, dict[str, Any]]:
    """The Deployments and StatefulSets, by name."""
    docs = [*by_kind("Deployment"), *by_kind("StatefulSet")]
    return {doc["metadata"]["name"]: doc for doc in docs}


# The pod label Kubernetes (1.28+) sets to a StatefulSet pod's ordinal.
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def deployment_env(deployment: dict[str, Any], ordinal: int = 0) -> dict[str, str]:
    """The environment a workload's container runs with (Secret values faked), in the pod
    of that `ordinal` for a StatefulSet."""
    configmaps = {doc["metadata"]["name"]: doc["data"] for doc in by_kind("ConfigMap")}
    env: dict[str, str] = {}
    spec = container(deployment)
    for source in spec.get("envFrom", []):
        env.update({k: str(v) for k, v in configmaps[source["configMapRef"]["name"]].items()})
    for var in spec.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == POD_INDEX, var
            env[var["name"]] = str(ordinal)
        else:
            env[var["name"]] = FAKE_SECRETS[var["valueFrom"]["secretKeyRef"]["key"]]
    return env


def deploy_env_names() -> dict[str, set[str]]:
    """file -> the variable names it sets."""
    found: dict[str, set[str]] = {}
    compose = load_yaml(COMPOSE)
    found[COMPOSE.name] = set(compose["services"]["bot"]["environment"])
    for name, doc in manifests().items():
        if doc["kind"] not in ("ConfigMap", "Secret", "Deployment", "StatefulSet"):
            continue
        names: set[str] = set()
        if doc["kind"] in ("ConfigMap", "Secret"):
            names |= set(doc.get("data") or {}) | set(doc.get("stringData") or {})
        if doc["kind"] in ("Deployment", "StatefulSet"):
            env = container(doc).get("env", [])
            names |= {var["name"] for var in env}
            names |= {var["valueFrom"]["secretKeyRef"]["key"] for var in env if secret_ref(var)}
        found[name] = names
    found[DOCKERFILE.name] = {n for n in dockerfile_env() if not RUNTIME_ENV.fullmatch(n)}
    return found


def secret_ref(var: dict[str, Any]) -> bool:
    return "secretKeyRef" in var.get("valueFrom", {})


def dockerfile_env() -> dict[str, str]:
    """Variables set by ENV in the Dockerfile (`ENV A=1 \\ B=2` form)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line)))
    return env


# ---- the tests --------------------------------------------------------------------------


def test_yaml_files_parse() -> None:
    compose = load_yaml(COMPOSE)
    assert set(compose["services"]) == {"bot", "redis"}
    docs = manifests()
    assert {doc["kind"] for doc in docs.values()} == {
        "Kustomization",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "StatefulSet",
        "PodDisruptionBudget",
    }
    for name, doc in docs.items():
        if doc["kind"] != "Kustomization":
            assert doc["apiVersion"] and doc["metadata"]["name"], name


def test_docker_compose_up_from_the_root_runs_the_deploy_file() -> None:
    root = load_yaml(ROOT / "compose.yaml")
    assert root["include"] == ["deploy/docker-compose.yml"]
    assert root["name"] == load_yaml(COMPOSE)["name"]


def test_every_variable_set_is_a_setting() -> None:
    settings = setting_names()
    assert {"REDIS_URL", "HEALTH_PORT", "SLACK_PORT", "SLACK_BOT_TOKEN"} <= settings
    for name, names in deploy_env_names().items():
        assert names or name == DOCKERFILE.name, f"{name} sets no variable: the parser missed it"
        assert names <= settings, f"{name} sets variables the bot does not read: {names - settings}"


def test_every_variable_set_is_documented_in_env_example() -> None:
    documented = documented_names()
    for name, names in deploy_env_names().items():
        assert names <= documented, f"{name} sets undocumented variables: {names - documented}"


def test_every_manifest_is_valid_for_the_newest_kubernetes() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    newest = kubernetes_validate.latest_version()
    shipped = tuple(int(part) for part in newest.split(".")[:2])
    assert shipped >= (1, 37), "kubernetes-validate ships older schemas than the manifests target"
    checked = set()
    for name, doc in manifests().items():
        if doc["kind"] == "Kustomization":  # kustomize's own file, not a Kubernetes object
            continue
        try:
            kubernetes_validate.validate(doc, newest, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not valid Kubernetes {newest}: {exc.message} at {exc.path}")
        checked.add(doc["kind"])
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Secret"} <= checked


def test_the_validation_catches_a_bad_manifest() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    (statefulset,) = by_kind("StatefulSet")
    misspelt = {**statefulset, "spec": {**statefulset["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, kubernetes_validate.latest_version(), strict=True)


def test_kubernetes_ports_and_probes_match_what_the_code_serves() -> None:
    deployments = workloads()
    assert set(deployments) == {"chatbot-slack-http", "chatbot-gateway"}
    for name, deployment in deployments.items():
        settings = load_settings(deployment_env(deployment), dotenv=False)
        port = serving_port(settings)
        spec = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}

        def resolve(ref: int | str, ports: dict[str, int] = ports) -> int:
            return ports[ref] if isinstance(ref, str) else ref

        assert port in ports.values(), f"{name}: the code serves on {port}, not exposed"
        for probe, path in (("livenessProbe", HEALTHZ), ("readinessProbe", READYZ)):
            get = spec[probe]["httpGet"]
            assert (get["path"], resolve(get["port"])) == (path, port), f"{name} {probe}"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] == METRICS
        assert int(annotations["prometheus.io/port"]) == port, name

        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > settings.shutdown_grace_seconds, f"{name}: grace period too short"


def test_kubernetes_shape_slack_http_scales_and_the_gateway_holds_a_shard_per_pod() -> None:
    deployments = workloads()
    slack = deployments["chatbot-slack-http"]
    gateway = deployments["chatbot-gateway"]

    slack_settings = load_settings(deployment_env(slack), dotenv=False)
    assert slack_settings.slack.enabled and slack_settings.slack.mode == "http"
    assert not slack_settings.discord.enabled
    assert slack["spec"]["replicas"] >= 2

    assert gateway["kind"] == "StatefulSet"
    replicas = gateway["spec"]["replicas"]
    held: list[int] = []
    for ordinal in range(replicas):
        pod = load_settings(deployment_env(gateway, ordinal), dotenv=False)
        assert pod.discord.enabled and not pod.slack.enabled
        assert pod.discord.shard_count == replicas, "DISCORD_SHARD_COUNT must equal replicas"
        assert pod.discord.shard_ids == (ordinal,)
        held.extend(pod.discord.shard_ids)
    assert held == list(range(replicas))  # every shard, each by one pod
    # Pod N+1 starts once pod N is ready: Discord takes one IDENTIFY per 5 s.
    assert gateway["spec"]["podManagementPolicy"] == "OrderedReady"

    for deployment in (slack, gateway):
        pod = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        requests = container(deployment)["resources"]["requests"]
        assert requests["cpu"] and requests["memory"]

    slack_labels = slack["spec"]["template"]["metadata"]["labels"].items()
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"].items()
    services = {doc["metadata"]["name"]: doc for doc in by_kind("Service")}
    selector = services["chatbot-slack"]["spec"]["selector"].items()
    assert selector <= slack_labels and not selector <= gateway_labels
    target = services["chatbot-slack"]["spec"]["ports"][0]["targetPort"]
    assert target in {p["name"] for p in container(slack)["ports"]}
    (pdb,) = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= slack_labels
    assert pdb["spec"]["minAvailable"] < slack["spec"]["replicas"]
    assert services["chatbot-redis"]["spec"]["type"] == "ExternalName"


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    (kustomization,) = by_kind("Kustomization")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == {name for name in present if not name.endswith(".example.yaml")}
    # Every secret key a Deployment reads is in the template.
    (secret,) = by_kind("Secret")
    for deployment in workloads().values():
        for var in container(deployment).get("env", []):
            if secret_ref(var):
                ref = var["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret["metadata"]["name"]
                assert ref["key"] in secret["stringData"]


def test_compose_ports_redis_and_grace_match_the_code() -> None:
    compose = load_yaml(COMPOSE)
    bot = compose["services"]["bot"]
    settings = load_settings({**bot["environment"], "TOGETHER_API_KEY": "test-key"}, dotenv=False)
    published = {int(str(p).rsplit(":", 1)[1]) for p in bot["ports"]}
    assert {settings.slack.port, settings.health_port} <= published
    assert bot["env_file"] == "../.env"  # the project root's .env
    assert bot["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert settings.redis_url is not None and "//redis:" in settings.redis_url
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
    grace = int(str(bot["stop_grace_period"]).rstrip("s"))
    assert grace > settings.shutdown_grace_seconds

    redis = compose["services"]["redis"]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(str(v).endswith(":/data") for v in redis["volumes"])
    assert "healthcheck" in redis


def test_dockerfile_runs_the_bot_as_non_root_with_a_health_check() -> None:
    text = DOCKERFILE.read_text()
    defaults = load_settings({}, dotenv=False)
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    image = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.MULTILINE)
    assert image and re.fullmatch(r"python:3\.11-slim(-\w+)?", image.group(1))
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.MULTILINE) for p in line.split()}
    assert {defaults.slack.port, defaults.health_port} <= exposed
    assert re.search(r'^\s+CMD \["python", "-m", "bot\.ops\.health"\]', text, re.MULTILINE)
    assert re.search(r'^CMD \["python", "-m", "bot", "run"\]$', text, re.MULTILINE)
    assert dockerfile_env()["PYTHONUNBUFFERED"] == "1"  # logs reach `docker logs` at once
    assert "--require-hashes --no-deps -r /tmp/requirements.lock" in text and "--no-deps ." in text
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for source in copied.split():
            assert (ROOT / source).exists() or source == "README.md", f"COPY {source}: missing"


def test_lock_pins_every_runtime_dependency_within_its_range() -> None:
    specifiers = pytest.importorskip("packaging.requirements")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.startswith(("#", " ")):
            name, version = line.split(" ")[0].split(";")[0].split("==")
            pins[name] = version
    for dependency in project["dependencies"]:
        req = specifiers.Requirement(dependency)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not pinned in {LOCK.name}: run ./scripts/upgrade --lock-only"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {req.specifier}"


# ---- the parser itself ------------------------------------------------------------------


def test_mini_yaml_reads_the_subset_and_rejects_the_rest() -> None:
    text = """\
a: 1
b: "x: y"  # comment
c:
  - name: n
    value: 'it''s'
  - [p, "q", 3]
d:
- plain
e: {}
f:
"""
    assert mini_yaml(text) == {
        "a": 1,
        "b": "x: y",
        "c": [{"name": "n", "value": "it's"}, ["p", "q", 3]],
        "d": ["plain"],
        "e": {},
        "f": None,
    }
    for bad in ("a: 1\na: 2", "a:\n  b: 1\n c: 2", "a: |\n  text", "a: [1, [2]]", 'a: "x'):
        with pytest.raises(YamlSubsetError):
            mini_yaml(bad)
