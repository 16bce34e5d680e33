"""`make k8s-validate`: render deploy/k8s's overlays offline and check them against the code.

    python deploy/validate.py                 # check both overlays, the Dockerfile and the dashboard
    python deploy/validate.py --print prod    # print the rendered overlay (a kustomize stand-in)

No kustomize binary and no cluster: the overlays are rendered here by a small subset of kustomize
(deploy/README.md, "The kustomize subset"), which refuses anything it does not implement rather
than rendering it differently from `kustomize build`. Then:

- every built-in kind is schema-validated offline by kubernetes-validate (strict: unknown fields
  are errors) for Kubernetes ``K8S_VERSION``;
- each custom resource (Strimzi Kafka / KafkaNodePool / KafkaTopic, CloudNativePG Cluster, KEDA
  ScaledObject, OpenTelemetryCollector) has its essential fields;
- cross-references against the code: the services of ``tsunagu.serve``, their consumer groups and
  consumed topics (read from ``services/<service>/handlers.py``), the topic names of
  ``tsunagu.topics`` with the configured prefix, the ports of ``tsunagu.settings``, the probe paths
  of ``tsunagu.health``; between the manifests: images, Services, PDBs, ScaledObjects, Secrets,
  the collector and the NetworkPolicies; and the settings a pod would start with are valid;
- the Dockerfile's static facts and the Grafana dashboard's metric names (documented in
  deploy/README.md).

Exits 1 with the list of problems, 0 when there are none.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana" / "tsunagu-ops.json"
DEPLOY_README = ROOT / "deploy" / "README.md"
K8S_VERSION = "1.33"  # the oldest Kubernetes the manifests target (KEDA, Strimzi and CNPG support it)
IMAGE = "tsunagu"  # the image name in the base that each overlay's `images:` replaces
MIN_GRACE_SECONDS = 30  # uvicorn's 10 s graceful HTTP drain + stopping consumers (offset commit) + the outbox
CONNECTIONS_PER_PROCESS = 14  # tsunagu.db.create_pool's max_size (10) + an outbox pool (4)
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE|DATABASE_URL|_KEY$", re.I)


class KustomizeError(Exception):
    """The kustomization uses something outside the implemented subset, or is wrong."""


# --------------------------------------------------------------------------------------------
# The kustomize subset
# --------------------------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass"}
# Strategic-merge keys of the lists in built-in kinds that this subset merges by key (every
# other list is replaced, as in a JSON merge patch — which is also what kustomize does for CRs).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


def load_documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise KustomizeError(f"{path.relative_to(ROOT)}: every document needs apiVersion and kind")
    return docs


def build(directory: Path) -> list[dict[str, Any]]:
    """Render a kustomization directory (the subset): resources, patches, namespace, labels, images —
    applied in kustomize's order."""
    kfile = directory / "kustomization.yaml"
    if not kfile.is_file():
        raise KustomizeError(f"{directory.relative_to(ROOT)}: no kustomization.yaml")
    k = yaml.safe_load(kfile.read_text(encoding="utf-8")) or {}
    unknown = set(k) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{kfile.relative_to(ROOT)}: {', '.join(sorted(unknown))} not in the supported subset")
    objects: list[dict[str, Any]] = []
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects.extend(build(path))
        elif path.is_file():
            objects.extend(load_documents(path))
        else:
            raise KustomizeError(f"{kfile.relative_to(ROOT)}: resource {entry} does not exist")
    for patch in k.get("patches", []):
        apply_patch(objects, patch, directory)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for entry in k.get("labels", []):
        apply_labels(objects, entry, kfile)
    for entry in k.get("images", []):
        apply_image(objects, entry, kfile)
    return objects


def apply_labels(objects: list[dict[str, Any]], entry: dict[str, Any], kfile: Path) -> None:
    unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
    if unknown or entry.get("includeSelectors"):
        raise KustomizeError(f"{kfile.relative_to(ROOT)}: labels support only pairs and includeTemplates "
                             "(selectors are immutable: never change them from an overlay)")
    for obj in objects:
        obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
        template = obj.get("spec", {}).get("template") if isinstance(obj.get("spec"), dict) else None
        if entry.get("includeTemplates") and isinstance(template, dict):
            template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])


def split_image(image: str) -> tuple[str, str]:
    """(name, the rest: ':tag', '@digest' or '')."""
    at = image.find("@")
    if at >= 0:
        return image[:at], image[at:]
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def containers_of(obj: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in an object."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from containers_of(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from containers_of(item)


def apply_image(objects: list[dict[str, Any]], entry: dict[str, Any], kfile: Path) -> None:
    unknown = set(entry) - {"name", "newName", "newTag", "digest"}
    if unknown or "name" not in entry:
        raise KustomizeError(f"{kfile.relative_to(ROOT)}: images entries take name, newName, newTag, digest")
    for obj in objects:
        for c in containers_of(obj):
            name, rest = split_image(str(c.get("image", "")))
            if name != entry["name"]:
                continue
            if "digest" in entry:
                rest = f"@{entry['digest']}"
            elif "newTag" in entry:
                rest = f":{entry['newTag']}"
            c["image"] = f"{entry.get('newName', name)}{rest}"


def overlay_image(directory: Path) -> str | None:
    """What an overlay's `images:` makes of IMAGE, e.g. registry/tsunagu:0.1.0."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8")) or {}
    for entry in k.get("images", []):
        if entry.get("name") == IMAGE:
            rest = f"@{entry['digest']}" if "digest" in entry else f":{entry['newTag']}" if "newTag" in entry else ""
            return f"{entry.get('newName', IMAGE)}{rest}"
    return None


def is_builtin(obj: dict[str, Any]) -> bool:
    """A kind of Kubernetes itself (core, apps, policy, networking.k8s.io, ...), not a CRD's."""
    api = str(obj.get("apiVersion", ""))
    group = api.rsplit("/", 1)[0] if "/" in api else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


def target_matches(obj: dict[str, Any], target: dict[str, Any], where: str) -> bool:
    unknown = set(target) - {"kind", "name", "group", "version", "namespace"}
    if unknown:
        raise KustomizeError(f"{where}: patch target supports kind, name, group, version, namespace")
    api = str(obj.get("apiVersion", ""))
    group, _, version = api.rpartition("/")
    meta = obj.get("metadata", {})
    checks = {
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "group": group,
        "version": version,
        "namespace": meta.get("namespace"),
    }
    return all(re.fullmatch(str(want), str(checks[key] or "")) for key, want in target.items())


def apply_patch(objects: list[dict[str, Any]], entry: dict[str, Any], directory: Path) -> None:
    where = f"{(directory / 'kustomization.yaml').relative_to(ROOT)}: patch {entry.get('path', '(inline)')}"
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{where}: a patch has either path or patch, optionally a target, nothing else")
    text = (directory / entry["path"]).read_text(encoding="utf-8") if "path" in entry else entry["patch"]
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    if len(docs) != 1:
        raise KustomizeError(f"{where}: one patch per entry (this subset does not split multi-document patches)")
    patch = docs[0]
    target = entry.get("target")
    if isinstance(patch, list):  # JSON 6902
        if not target:
            raise KustomizeError(f"{where}: a JSON 6902 patch needs a target")
        matched = [o for o in objects if target_matches(o, target, where)]
        if not matched:
            raise KustomizeError(f"{where}: the target matches nothing")
        for obj in matched:
            for op in patch:
                json6902(obj, op, where)
        return
    if not isinstance(patch, dict) or "kind" not in patch or "name" not in patch.get("metadata", {}):
        raise KustomizeError(f"{where}: a strategic-merge patch needs kind and metadata.name")
    if target:
        raise KustomizeError(f"{where}: strategic-merge patches with a target are not in the subset")
    matched = [o for o in objects if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]]
    if len(matched) != 1:
        raise KustomizeError(f"{where}: {len(matched)} resources are {patch['kind']}/{patch['metadata']['name']}")
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in patch["metadata"].items() if k not in ("name", "namespace")}
    strategic_merge(matched[0], body, builtin=is_builtin(matched[0]), where=where)


def strategic_merge(base: dict[str, Any], patch: dict[str, Any], *, builtin: bool, where: str) -> None:
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"{where}: patch directives ({key}) are not in the subset")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            strategic_merge(base[key], value, builtin=builtin, where=where)
        elif builtin and key in MERGE_KEYS and isinstance(value, list) and isinstance(base.get(key), list):
            merge_key = MERGE_KEYS[key]
            for item in value:
                found = [b for b in base[key] if isinstance(b, dict) and b.get(merge_key) == item.get(merge_key)]
                if found:
                    strategic_merge(found[0], item, builtin=builtin, where=where)
                else:
                    base[key].append(copy.deepcopy(item))
        else:
            base[key] = copy.deepcopy(value)


def _pointer(path: str, where: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"{where}: JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json6902(obj: dict[str, Any], op: dict[str, Any], where: str) -> None:
    kind = op.get("op")
    if kind not in ("add", "replace", "remove"):
        raise KustomizeError(f"{where}: JSON 6902 op {kind!r} is not in the subset (add, replace, remove)")
    parts = _pointer(str(op.get("path", "")), where)
    parent: Any = obj
    try:
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            if kind == "add":
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[int(last)] = copy.deepcopy(op["value"])
            else:
                del parent[int(last)]
        elif kind == "add":
            parent[last] = copy.deepcopy(op["value"])
        elif kind == "replace":
            if last not in parent:
                raise KeyError(last)
            parent[last] = copy.deepcopy(op["value"])
        else:
            del parent[last]
    except (KeyError, IndexError, ValueError, TypeError):
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        raise KustomizeError(f"{where}: {kind} {op.get('path')}: no such path in {name}") from None


def render(overlay: str) -> list[dict[str, Any]]:
    return build(K8S_DIR / "overlays" / overlay)


# --------------------------------------------------------------------------------------------
# What the code says
# --------------------------------------------------------------------------------------------


@dataclass
class Consumer:
    group: str | None  # a literal group id, or None when it comes from a setting
    group_setting: str | None  # the Settings field that names the group, e.g. metrics_consumer_group
    topics: tuple[str, ...]  # short names (tsunagu.topics)


@dataclass
class CodeFacts:
    services: tuple[str, ...]
    topics: tuple[str, ...]
    consumers: dict[str, Consumer]
    ports: dict[str, int]
    health_paths: tuple[str, ...]
    defaults: dict[str, Any]
    problems: list[str] = field(default_factory=list)

    def group_of(self, service: str, env: dict[str, str]) -> str | None:
        c = self.consumers.get(service)
        if c is None:
            return None
        if c.group is not None:
            return c.group
        assert c.group_setting is not None
        return env.get(f"TSUNAGU_{c.group_setting.upper()}", str(self.defaults.get(c.group_setting)))


def _topic_of(node: ast.AST, constants: dict[str, tuple[str, ...]], topics_mod: Any) -> tuple[str, ...] | None:
    """`topics.NAME` -> (short,), `CONSUMED` (a module tuple of topics.NAME) -> its names."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "topics":
        value = getattr(topics_mod, node.attr, None)
        return (value,) if isinstance(value, str) else None
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return None


def consumer_of(path: Path, topics_mod: Any) -> Consumer | str:
    """The one `broker.subscriber(...)` of a service's handlers.py: its group and topics, or why not."""
    if not path.is_file():
        return f"{path.relative_to(ROOT)} does not exist"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if isinstance(node.value, ast.Tuple):
                names = [_topic_of(e, {}, topics_mod) for e in node.value.elts]
                if names and all(names):
                    constants[node.targets[0].id] = tuple(n[0] for n in names if n)
    found: list[Consumer] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "subscriber"):
            continue
        short: list[str] = []
        for arg in node.args:
            inner = arg.value if isinstance(arg, ast.Starred) else arg
            if isinstance(inner, ast.GeneratorExp):  # *(settings.topic(t) for t in CONSUMED)
                names = _topic_of(inner.generators[0].iter, constants, topics_mod)
            elif isinstance(inner, ast.Call) and inner.args:  # settings.topic(topics.X)
                names = _topic_of(inner.args[0], constants, topics_mod)
            else:
                names = None
            if names is None:
                return f"{path.relative_to(ROOT)}:{node.lineno}: cannot read the subscriber's topics"
            short.extend(names)
        group: str | None = None
        setting: str | None = None
        for kw in node.keywords:
            value = kw.value
            if kw.arg is None and isinstance(value, ast.Call) and value.args:  # **batch_subscriber(group, ...)
                first = value.args[0]
            elif kw.arg == "group_id":
                first = value
            else:
                continue
            if (isinstance(first, ast.Call) and isinstance(first.func, ast.Attribute) and first.func.attr == "group"
                    and first.args):  # settings.group(name): the prefix is empty unless set (base config sets none)
                first = first.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                group = first.value
            elif isinstance(first, ast.Attribute) and getattr(first.value, "id", None) == "settings":
                setting = first.attr
        if group is None and setting is None:
            return f"{path.relative_to(ROOT)}:{node.lineno}: cannot read the subscriber's consumer group"
        found.append(Consumer(group, setting, tuple(short)))
    if len(found) != 1:
        return f"{path.relative_to(ROOT)}: expected one broker.subscriber(...), found {len(found)}"
    return found[0]


def code_facts() -> CodeFacts:
    from tsunagu import topics as topics_mod
    from tsunagu.health import health_router
    from tsunagu.serve import SERVICES
    from tsunagu.settings import Settings

    problems: list[str] = []
    consumers: dict[str, Consumer] = {}
    for service in SERVICES:
        got = consumer_of(ROOT / "services" / service / "handlers.py", topics_mod)
        if isinstance(got, str):
            problems.append(f"code: {service}: {got}")
        else:
            consumers[service] = got
    defaults = {name: f.default for name, f in Settings.model_fields.items()}
    return CodeFacts(
        services=tuple(SERVICES),
        topics=tuple(topics_mod.ALL),
        consumers=consumers,
        ports={s: int(defaults[f"{s}_port"]) for s in SERVICES},
        health_paths=tuple(getattr(r, "path", "") for r in health_router("check", {}).routes),
        defaults=defaults,
        problems=problems,
    )


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """The process environment with tsunagu's variables replaced by ``env`` (restored after)."""
    ours = [k for k in os.environ if k.startswith("TSUNAGU_") or k in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")]
    saved = {k: os.environ.pop(k) for k in ours}
    os.environ.update(env)
    try:
        yield
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def ref(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels only; matchExpressions are not used here) selects these labels."""
    if selector is None:
        return False
    if set(selector) - {"matchLabels"}:
        return False
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


@dataclass
class Rendered:
    overlay: str
    objects: list[dict[str, Any]]
    image: str | None
    namespace: str | None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((o for o in self.of(kind) if o["metadata"].get("name") == name), None)


_SCHEMA_RESULTS: dict[str, str | None] = {}  # an object's JSON -> its schema problem (kubernetes-validate is slow)


def schema_problem(obj: dict[str, Any]) -> str | None:
    import kubernetes_validate

    key = json.dumps(obj, sort_keys=True, default=str)
    if key not in _SCHEMA_RESULTS:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            _SCHEMA_RESULTS[key] = None
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.absolute_path) or "(top)"
            _SCHEMA_RESULTS[key] = f"schema (Kubernetes {K8S_VERSION}): {where}: {err.message}"
        except kubernetes_validate.SchemaNotFoundError as err:
            _SCHEMA_RESULTS[key] = err.message
    return _SCHEMA_RESULTS[key]


def check_schemas(r: Rendered) -> list[str]:
    problems = []
    for obj in r.objects:
        if not is_builtin(obj):
            if obj["kind"] not in CUSTOM_KINDS:
                problems.append(f"{ref(obj)}: custom kind {obj['apiVersion']} {obj['kind']} has no checker")
            continue
        problem = schema_problem(obj)
        if problem:
            problems.append(f"{ref(obj)}: {problem}")
    return problems


def check_generic(r: Rendered) -> list[str]:
    problems = []
    seen: set[tuple[str, str]] = set()
    for obj in r.objects:
        key = (obj["kind"], obj.get("metadata", {}).get("name", ""))
        if not key[1]:
            problems.append(f"{obj['kind']}: no metadata.name")
        if key in seen:
            problems.append(f"{ref(obj)}: defined twice")
        seen.add(key)
        if obj["kind"] not in CLUSTER_SCOPED and obj["metadata"].get("namespace") != r.namespace:
            problems.append(f"{ref(obj)}: namespace {obj['metadata'].get('namespace')!r}, not {r.namespace!r}")
        if obj["kind"] == "Secret" and (obj.get("data") or obj.get("stringData")):
            problems.append(f"{ref(obj)}: a Secret with data is committed; reference it, create it out of band")
        if obj["kind"] == "ConfigMap":
            for k, v in (obj.get("data") or {}).items():
                if SECRET_NAME.search(k):
                    problems.append(f"{ref(obj)}: {k} looks like a secret; it belongs in a Secret")
                if not isinstance(v, str):
                    problems.append(f"{ref(obj)}: {k} is not a string")
    if r.namespace and not r.named("Namespace", r.namespace):
        problems.append(f"Namespace/{r.namespace}: the overlay's namespace is not among its resources")
    return problems


def config_env(r: Rendered, container: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The environment a container starts with (ConfigMaps, then env), and the names of the
    variables filled from Secrets."""
    env: dict[str, str] = {}
    from_secrets: list[str] = []
    for source in container.get("envFrom") or []:
        name = (source.get("configMapRef") or {}).get("name")
        cm = r.named("ConfigMap", name) if name else None
        if cm is not None:
            env.update(cm.get("data") or {})
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in (var.get("valueFrom") or {}):
            from_secrets.append(var["name"])
    return env, from_secrets


def _probe_port(probe: dict[str, Any] | None, ports: dict[str, int]) -> tuple[str | None, int | None]:
    get = (probe or {}).get("httpGet") or {}
    port = get.get("port")
    return get.get("path"), ports.get(port) if isinstance(port, str) else port


def check_services(r: Rendered, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    deployments = {d["metadata"]["name"]: d for d in r.of("Deployment")}
    partitions = {t.get("spec", {}).get("topicName"): t.get("spec", {}).get("partitions") for t in r.of("KafkaTopic")}
    clusters = r.of("Cluster")
    for service in facts.services:
        name = f"tsunagu-{service}"
        dep = deployments.get(name)
        if dep is None:
            problems.append(f"Deployment/{name}: missing (tsunagu.serve runs {service})")
            continue
        where = ref(dep)
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        pod_labels = spec["template"].get("metadata", {}).get("labels") or {}
        if not selects(spec.get("selector"), pod_labels):
            problems.append(f"{where}: its selector does not select its own pod template")
        if "replicas" in spec:
            problems.append(f"{where}: sets replicas, which its ScaledObject owns")
        containers = pod.get("containers") or []
        c = next((c for c in containers if c.get("name") == service), None)
        if c is None:
            problems.append(f"{where}: no container named {service}")
            continue
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        if argv != ["python", "-m", "tsunagu.serve", service]:
            problems.append(f"{where}: runs {argv}, not python -m tsunagu.serve {service}")
        if r.image and c.get("image") != r.image:
            problems.append(f"{where}: image {c.get('image')} is not the overlay's {r.image}")
        if split_image(str(c.get("image")))[0] == IMAGE:
            problems.append(f"{where}: image {c.get('image')} was not set by the overlay's images:")
        # security
        psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
        if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
            problems.append(f"{where}: runAsNonRoot is not set")
        if 0 in (psc.get("runAsUser"), csc.get("runAsUser")):
            problems.append(f"{where}: runs as uid 0")
        if csc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is not read-only")
        if csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{where}: capabilities are not all dropped")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        tmp = [m for m in c.get("volumeMounts") or [] if m.get("mountPath") == "/tmp"]
        if not tmp or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
            problems.append(f"{where}: /tmp is not an emptyDir (the root filesystem is read-only)")
        res = c.get("resources") or {}
        if not (res.get("requests") or {}).get("cpu") or not (res.get("requests") or {}).get("memory"):
            problems.append(f"{where}: no cpu/memory requests")
        if not (res.get("limits") or {}).get("memory"):
            problems.append(f"{where}: no memory limit")
        if int(pod.get("terminationGracePeriodSeconds", 30)) < MIN_GRACE_SECONDS:
            problems.append(f"{where}: terminationGracePeriodSeconds < {MIN_GRACE_SECONDS}: shutdown commits offsets")
        # environment, secrets, settings
        env, from_secrets = config_env(r, c)
        for var in c.get("env") or []:
            if "value" in var and SECRET_NAME.search(var["name"]):
                problems.append(f"{where}: {var['name']} has a literal value; it must come from a Secret")
            cm_ref = (var.get("valueFrom") or {}).get("configMapKeyRef")
            if cm_ref and not r.named("ConfigMap", cm_ref.get("name")):
                problems.append(f"{where}: ConfigMap {cm_ref.get('name')} does not exist")
        for source in c.get("envFrom") or []:
            cm_name = (source.get("configMapRef") or {}).get("name")
            if cm_name and not r.named("ConfigMap", cm_name):
                problems.append(f"{where}: ConfigMap {cm_name} does not exist")
            if "secretRef" in source:
                problems.append(f"{where}: envFrom a Secret: name each secret variable instead")
        for required in ("DATABASE_URL", "TSUNAGU_CALLER_KEY_SECRET"):
            if required not in from_secrets and (required == "DATABASE_URL" or service == "intake"):
                problems.append(f"{where}: {required} is not taken from a Secret")
        # Least privilege: only intake pseudonymises; the services behind it never need the key.
        if service != "intake" and "TSUNAGU_CALLER_KEY_SECRET" in from_secrets:
            problems.append(f"{where}: holds TSUNAGU_CALLER_KEY_SECRET, which only intake needs")
        for var in c.get("env") or []:
            sref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if sref:
                secret = r.named("Secret", sref.get("name"))
                if secret is not None and (secret.get("data") or secret.get("stringData")):
                    problems.append(f"{where}: Secret {sref.get('name')} is defined with data in the repository")
            if sref and var["name"] == "DATABASE_URL":
                names = {f"{cl['metadata']['name']}-app" for cl in clusters}
                if sref.get("name") not in names or sref.get("key") not in ("uri", "fqdn-uri"):
                    problems.append(f"{where}: DATABASE_URL from {sref.get('name')}/{sref.get('key')}, not the "
                                    f"CloudNativePG app Secret's uri ({', '.join(sorted(names)) or 'no Cluster'})")
        if env.get("TSUNAGU_HTTP_HOST") != "0.0.0.0":
            problems.append(f"{where}: TSUNAGU_HTTP_HOST is {env.get('TSUNAGU_HTTP_HOST')!r}, not 0.0.0.0")
        if r.overlay == "prod" and env.get("TSUNAGU_ENV") != "prod":
            problems.append(f"{where}: TSUNAGU_ENV is {env.get('TSUNAGU_ENV')!r} in prod")
        problems += [f"{where}: {p}" for p in settings_problems(env, from_secrets)]
        # port and probes
        port = int(env.get(f"TSUNAGU_{service.upper()}_PORT", facts.ports[service]))
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        if ports.get("http") != port:
            problems.append(f"{where}: container port http is {ports.get('http')}, the service listens on {port}")
        for probe_name, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
            got_path, got_port = _probe_port(c.get(probe_name), ports)
            if path not in facts.health_paths:
                problems.append(f"code: tsunagu/health.py no longer serves {path}")
            if got_path != path or got_port != port:
                problems.append(f"{where}: {probe_name} is {got_path} on {got_port}, not {path} on {port}")
        problems += check_service_objects(r, facts, service, dep, port, env, partitions)
    for extra in set(deployments) - {f"tsunagu-{s}" for s in facts.services}:
        problems.append(f"Deployment/{extra}: not a service of tsunagu.serve")
    for so in r.of("ScaledObject"):
        target = so.get("spec", {}).get("scaleTargetRef") or {}
        if target.get("kind", "Deployment") != "Deployment" or target.get("name") not in deployments:
            problems.append(f"{ref(so)}: scaleTargetRef {target.get('name')!r} is not a Deployment here")
        if not so.get("spec", {}).get("triggers"):
            problems.append(f"{ref(so)}: no triggers")
    all_pod_labels = [d["spec"]["template"].get("metadata", {}).get("labels") or {} for d in deployments.values()]
    for pdb in r.of("PodDisruptionBudget"):
        if not any(selects(pdb["spec"].get("selector"), labels) for labels in all_pod_labels):
            problems.append(f"{ref(pdb)}: selects no Deployment's pods")
    readme = DEPLOY_README.read_text(encoding="utf-8") if DEPLOY_README.is_file() else ""
    for dep in deployments.values():
        for c in containers_of(dep):
            for var in c.get("env") or []:
                sref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if sref and f"`{sref.get('name')}`" not in readme:
                    problems.append(f"{ref(dep)}: Secret {sref.get('name')} is not documented in deploy/README.md")
    # PostgreSQL connections at full scale
    workers = _workers(r)
    needed = sum(int(so["spec"].get("maxReplicaCount", 1)) for so in r.of("ScaledObject")) * workers
    needed *= CONNECTIONS_PER_PROCESS
    for cl in clusters:
        limit = int(((cl["spec"].get("postgresql") or {}).get("parameters") or {}).get("max_connections", 100))
        if needed > limit:
            problems.append(f"{ref(cl)}: max_connections {limit} < {needed} that every service at its "
                            f"maxReplicaCount may open ({CONNECTIONS_PER_PROCESS} per process)")
    return problems


def _workers(r: Rendered) -> int:
    cm = r.named("ConfigMap", "tsunagu-config") or {}
    return int((cm.get("data") or {}).get("TSUNAGU_WORKERS", "1"))


def settings_problems(env: dict[str, str], from_secrets: list[str]) -> list[str]:
    """Would tsunagu.settings accept what this pod starts with? (secrets stand in as placeholders)"""
    from tsunagu.settings import get_settings

    full = dict(env)
    placeholders = {"DATABASE_URL": "postgresql://placeholder@localhost/tsunagu",
                    "TSUNAGU_CALLER_KEY_SECRET": "placeholder-secret-placeholder-secret-0123456789"}
    for name in from_secrets:
        full[name] = placeholders.get(name, "placeholder")
    with environment({k: v for k, v in full.items() if "$(" not in v}):
        try:
            get_settings()
        except SystemExit as err:
            return [f"settings: {str(err.code).replace(chr(10), ' ')}"]
    return []


def check_service_objects(r: Rendered, facts: CodeFacts, service: str, dep: dict[str, Any], port: int,
                          env: dict[str, str], partitions: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    name = dep["metadata"]["name"]
    labels = dep["spec"]["template"].get("metadata", {}).get("labels") or {}
    svc = r.named("Service", name)
    if svc is None:
        problems.append(f"Service/{name}: missing ({service} serves HTTP on {port})")
    else:
        if not (svc["spec"].get("selector") and all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())):
            problems.append(f"{ref(svc)}: its selector does not select {ref(dep)}'s pods")
        targets = [p.get("targetPort") for p in svc["spec"].get("ports") or []]
        if not any(t in ("http", port) for t in targets):
            problems.append(f"{ref(svc)}: no port targets http ({port})")
    pdbs = [p for p in r.of("PodDisruptionBudget") if selects(p["spec"].get("selector"), labels)]
    if len(pdbs) != 1:
        problems.append(f"{ref(dep)}: {len(pdbs)} PodDisruptionBudgets select its pods, not 1")
    scaled = [s for s in r.of("ScaledObject") if (s["spec"].get("scaleTargetRef") or {}).get("name") == name]
    if len(scaled) != 1:
        problems.append(f"{ref(dep)}: {len(scaled)} ScaledObjects target it, not 1")
        return problems
    so = scaled[0]
    where = ref(so)
    spec = so["spec"]
    consumer = facts.consumers.get(service)
    group = facts.group_of(service, env)
    prefix = env.get("TSUNAGU_TOPIC_PREFIX", facts.defaults["topic_prefix"])
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS")
    kafka = [t for t in spec.get("triggers") or [] if t.get("type") == "kafka"]
    if consumer is not None:
        want = {f"{prefix}{t}" for t in consumer.topics}
        got = [(t.get("metadata") or {}).get("topic") for t in kafka]
        if set(got) != want or len(got) != len(want):
            problems.append(f"{where}: kafka triggers on {sorted(map(str, got))}, "
                            f"but {service} consumes {sorted(want)}")
    for t in kafka:
        meta = t.get("metadata") or {}
        if meta.get("consumerGroup") != group:
            problems.append(f"{where}: consumerGroup {meta.get('consumerGroup')!r}, but {service}'s group is {group!r}")
        if meta.get("bootstrapServers") != bootstrap:
            problems.append(f"{where}: bootstrapServers {meta.get('bootstrapServers')!r} != "
                            f"KAFKA_BOOTSTRAP_SERVERS {bootstrap!r}")
        if not str(meta.get("lagThreshold", "")).isdigit() or int(meta["lagThreshold"]) < 1:
            problems.append(f"{where}: lagThreshold must be a positive integer (as a string)")
        if str(meta.get("allowIdleConsumers", "false")).lower() == "true":
            problems.append(f"{where}: allowIdleConsumers lets it scale past the partitions")
        n = partitions.get(meta.get("topic"))
        top = int(spec.get("maxReplicaCount", 100)) * _workers(r)
        if n is None:
            problems.append(f"{where}: topic {meta.get('topic')} has no KafkaTopic")
        elif top > int(n):
            problems.append(f"{where}: maxReplicaCount x TSUNAGU_WORKERS = {top} > {n} partitions "
                            f"of {meta.get('topic')}")
    if not kafka:
        problems.append(f"{where}: no kafka trigger on consumer lag")
    low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
    if not isinstance(low, int) or low < 1:
        problems.append(f"{where}: minReplicaCount must be >= 1 (it serves HTTP and publishes its outbox)")
    if not isinstance(high, int) or high < low:
        problems.append(f"{where}: maxReplicaCount must be an integer >= minReplicaCount")
    return problems


def check_kafka(r: Rendered, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    kafkas = r.of("Kafka")
    if len(kafkas) != 1:
        return [f"Kafka: {len(kafkas)} Kafka clusters, expected 1"]
    kafka = kafkas[0]
    kname = kafka["metadata"]["name"]
    cm = (r.named("ConfigMap", "tsunagu-config") or {}).get("data") or {}
    ann = kafka["metadata"].get("annotations") or {}
    if ann.get("strimzi.io/kraft") != "enabled" or ann.get("strimzi.io/node-pools") != "enabled":
        problems.append(f"{ref(kafka)}: not KRaft with node pools (annotations strimzi.io/kraft, node-pools)")
    spec = kafka.get("spec") or {}
    if not (spec.get("kafka") or {}).get("version"):
        problems.append(f"{ref(kafka)}: spec.kafka.version missing")
    if "zookeeper" in spec:
        problems.append(f"{ref(kafka)}: has zookeeper (KRaft only)")
    listeners = (spec.get("kafka") or {}).get("listeners") or []
    host, _, port = str(cm.get("KAFKA_BOOTSTRAP_SERVERS", "")).partition(":")
    if host != f"{kname}-kafka-bootstrap":
        problems.append(f"ConfigMap/tsunagu-config: KAFKA_BOOTSTRAP_SERVERS {host!r} is not {kname}-kafka-bootstrap")
    used = [li for li in listeners if str(li.get("port")) == port]
    if not used:
        problems.append(f"{ref(kafka)}: no listener on port {port} of KAFKA_BOOTSTRAP_SERVERS")
    elif used[0].get("tls") or used[0].get("authentication"):
        problems.append(f"{ref(kafka)}: listener {used[0].get('name')} needs TLS/auth, which tsunagu/kafka.py lacks")
    else:
        peers = used[0].get("networkPolicyPeers")
        if peers is not None and not any(selects(p.get("podSelector"), {"app.kubernetes.io/component":
                                                                        "event-service"}) for p in peers):
            problems.append(f"{ref(kafka)}: listener {used[0].get('name')}'s networkPolicyPeers exclude the services")
    config = (spec.get("kafka") or {}).get("config") or {}
    if config.get("auto.create.topics.enable") is not False:
        problems.append(f"{ref(kafka)}: auto.create.topics.enable must be false (every topic is a KafkaTopic)")
    pools = [p for p in r.of("KafkaNodePool") if (p["metadata"].get("labels") or {}).get("strimzi.io/cluster") == kname]
    def nodes(role: str) -> int:
        return sum(int(p["spec"].get("replicas", 0)) for p in pools if role in (p["spec"].get("roles") or []))

    brokers, controllers = nodes("broker"), nodes("controller")
    for p in r.of("KafkaNodePool"):
        if p not in pools:
            problems.append(f"{ref(p)}: label strimzi.io/cluster is not {kname}")
        if not (p["spec"].get("storage") or {}).get("type"):
            problems.append(f"{ref(p)}: no storage")
    if brokers < 1 or controllers < 1:
        problems.append(f"Kafka/{kname}: node pools give {brokers} brokers and {controllers} controllers")
    if r.overlay == "prod" and (brokers < 3 or controllers < 3):
        problems.append(f"Kafka/{kname}: prod needs 3 brokers and 3 controllers, has {brokers} and {controllers}")
    # topics: exactly those of tsunagu.topics, with the prefix
    prefix = cm.get("TSUNAGU_TOPIC_PREFIX", facts.defaults["topic_prefix"])
    want = {f"{prefix}{t}" for t in facts.topics}
    parts = int(cm.get("TSUNAGU_PARTITIONS", facts.defaults["partitions"]))
    got = set()
    for t in r.of("KafkaTopic"):
        where = ref(t)
        s = t.get("spec") or {}
        name = s.get("topicName", t["metadata"]["name"])
        got.add(name)
        if (t["metadata"].get("labels") or {}).get("strimzi.io/cluster") != kname:
            problems.append(f"{where}: label strimzi.io/cluster is not {kname}")
        if s.get("partitions") != parts:
            problems.append(f"{where}: {s.get('partitions')} partitions, TSUNAGU_PARTITIONS is {parts}")
        replicas = int(s.get("replicas", 0))
        isr = int((s.get("config") or {}).get("min.insync.replicas", config.get("min.insync.replicas", 1)))
        if not 1 <= replicas <= max(brokers, 1):
            problems.append(f"{where}: replicas {replicas} with {brokers} brokers")
        if isr > replicas or (replicas > 1 and isr >= replicas):
            problems.append(f"{where}: min.insync.replicas {isr} with {replicas} replicas (one broker may not fail)")
        if r.overlay == "prod" and (replicas != 3 or isr != 2):
            problems.append(f"{where}: prod needs replicas 3 and min.insync.replicas 2, has {replicas} and {isr}")
        if not str((s.get("config") or {}).get("retention.ms", "")).lstrip("-").isdigit():
            problems.append(f"{where}: retention.ms missing (replay depends on it)")
    for missing in sorted(want - got):
        problems.append(f"KafkaTopic: {missing} (tsunagu/topics.py) has no KafkaTopic")
    for extra in sorted(got - want):
        problems.append(f"KafkaTopic: {extra} is not a topic of tsunagu/topics.py with prefix {prefix!r}")
    return problems


def check_postgres(r: Rendered) -> list[str]:
    problems: list[str] = []
    clusters = r.of("Cluster")
    if len(clusters) != 1:
        return [f"Cluster: {len(clusters)} CloudNativePG clusters, expected 1"]
    cl = clusters[0]
    spec = cl.get("spec") or {}
    instances = int(spec.get("instances", 0))
    if instances < 1 or (r.overlay == "prod" and instances < 3):
        problems.append(f"{ref(cl)}: {instances} instances ({'3' if r.overlay == 'prod' else '1'} or more needed)")
    initdb = (spec.get("bootstrap") or {}).get("initdb") or {}
    if initdb.get("database") != "tsunagu":
        problems.append(f"{ref(cl)}: bootstrap.initdb.database is {initdb.get('database')!r}, not 'tsunagu'")
    if initdb.get("secret"):
        problems.append(f"{ref(cl)}: initdb.secret set: let the operator generate the app Secret")
    if not (spec.get("storage") or {}).get("size"):
        problems.append(f"{ref(cl)}: no storage.size")
    return problems


def check_collector(r: Rendered) -> list[str]:
    problems: list[str] = []
    cols = r.of("OpenTelemetryCollector")
    if len(cols) != 1:
        return [f"OpenTelemetryCollector: {len(cols)} collectors, expected 1"]
    col = cols[0]
    config = (col.get("spec") or {}).get("config") or {}
    if not isinstance(config, dict):
        return [f"{ref(col)}: spec.config must be an object (opentelemetry.io/v1beta1)"]
    receivers = config.get("receivers") or {}
    protocols = (receivers.get("otlp") or {}).get("protocols") or {}
    if "http" not in protocols:
        problems.append(f"{ref(col)}: no OTLP/HTTP receiver (the services export OTLP over HTTP)")
    pipelines = ((config.get("service") or {}).get("pipelines")) or {}
    for signal in ("traces", "metrics", "logs"):
        if signal not in pipelines:
            problems.append(f"{ref(col)}: no {signal} pipeline")
    for pname, p in pipelines.items():
        for part in ("receivers", "processors", "exporters"):
            for item in p.get(part) or []:
                if item not in (config.get(part) or {}):
                    problems.append(f"{ref(col)}: pipeline {pname} uses {part[:-1]} {item}, which is not defined")
        if not p.get("receivers") or not p.get("exporters"):
            problems.append(f"{ref(col)}: pipeline {pname} needs receivers and exporters")
    cm = (r.named("ConfigMap", "tsunagu-config") or {}).get("data") or {}
    endpoint = cm.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    want = f"http://{col['metadata']['name']}-collector:4318"
    if endpoint != want:
        problems.append(f"ConfigMap/tsunagu-config: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint!r}, not {want} "
                        "(the operator's Service for OTLP/HTTP)")
    if cm.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
        problems.append("ConfigMap/tsunagu-config: OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf (the exporter "
                        "installed is opentelemetry-exporter-otlp-proto-http)")
    return problems


def _allowed_peer(peer: dict[str, Any], kafka: str, pg: str, collector: str) -> str | None:
    """Which allowed destination an egress peer is: kafka, postgres, collector, dns, or None."""
    if "ipBlock" in peer:
        return None
    labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
    ns = (peer.get("namespaceSelector") or {}).get("matchLabels")
    if "namespaceSelector" in peer:
        if ns == {"kubernetes.io/metadata.name": "kube-system"} and labels.get("k8s-app") == "kube-dns":
            return "dns"
        return None
    if labels.get("strimzi.io/cluster") == kafka:
        return "kafka"
    if labels.get("cnpg.io/cluster") == pg:
        return "postgres"
    if labels.get("app.kubernetes.io/name") == f"{collector}-collector":
        return "collector"
    return None


def check_network(r: Rendered, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    kafka = next((k["metadata"]["name"] for k in r.of("Kafka")), "")
    pg = next((c["metadata"]["name"] for c in r.of("Cluster")), "")
    col = next((c["metadata"]["name"] for c in r.of("OpenTelemetryCollector")), "")
    policies = r.of("NetworkPolicy")
    for service in facts.services:
        dep = r.named("Deployment", f"tsunagu-{service}")
        if dep is None:
            continue
        labels = dep["spec"]["template"].get("metadata", {}).get("labels") or {}
        mine = [p for p in policies if selects(p["spec"].get("podSelector"), labels)]
        types = {t for p in mine for t in p["spec"].get("policyTypes") or []}
        if not {"Ingress", "Egress"} <= types:
            problems.append(f"{ref(dep)}: NetworkPolicies do not restrict both ingress and egress")
        reached: set[str] = set()
        for p in mine:
            for rule in p["spec"].get("egress") or []:
                peers = rule.get("to")
                if not peers:
                    problems.append(f"{ref(p)}: an egress rule without `to` lets {service} reach anything")
                    continue
                for peer in peers:
                    kind = _allowed_peer(peer, kafka, pg, col)
                    if kind is None:
                        problems.append(f"{ref(p)}: {service} may reach {peer}, which is not Kafka, PostgreSQL, "
                                        "the collector or DNS")
                    else:
                        reached.add(kind)
        for needed in ("kafka", "postgres", "collector", "dns"):
            if needed not in reached:
                problems.append(f"{ref(dep)}: NetworkPolicies do not let {service} reach {needed}")
        port = facts.ports[service]
        open_ports: set[int] = set()
        for p in mine:
            for rule in p["spec"].get("ingress") or []:
                rule_ports = {int(x.get("port")) for x in rule.get("ports") or [] if str(x.get("port")).isdigit()}
                open_ports |= rule_ports
                peers = rule.get("from")
                wide = not peers or any("ipBlock" in x or x.get("namespaceSelector") == {} for x in peers)
                if wide and service != "intake":
                    problems.append(f"{ref(p)}: {service} is open to everyone; only intake (partners) may be")
                if not rule_ports:
                    problems.append(f"{ref(p)}: an ingress rule without ports opens every port of {service}")
        if port not in open_ports:
            problems.append(f"{ref(dep)}: no NetworkPolicy admits traffic to its port {port}")
    return problems


CUSTOM_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "Cluster", "ScaledObject", "OpenTelemetryCollector"}


def check_overlay(overlay: str, objects: list[dict[str, Any]] | None = None,
                  facts: CodeFacts | None = None) -> list[str]:
    """Every problem of one overlay (rendered here unless ``objects`` is given), each prefixed."""
    facts = facts or code_facts()
    directory = K8S_DIR / "overlays" / overlay
    try:
        objects = render(overlay) if objects is None else objects
    except (KustomizeError, yaml.YAMLError, OSError) as err:
        return [f"{overlay}: cannot render: {err}"]
    k = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8")) or {}
    r = Rendered(overlay, objects, overlay_image(directory), k.get("namespace"))
    problems = list(facts.problems)
    for check in (check_generic, check_schemas, check_postgres, check_collector):
        problems += check(r)
    problems += check_services(r, facts)
    problems += check_kafka(r, facts)
    problems += check_network(r, facts)
    if not r.image:
        problems.append(f"{directory.relative_to(ROOT)}: images: does not set {IMAGE}")
    return [f"{overlay}: {p}" for p in dict.fromkeys(problems)]


def committed_secrets() -> list[str]:
    """Any Secret with data in any YAML under deploy/ (rendered or not)."""
    problems = []
    for path in sorted((ROOT / "deploy").rglob("*.y*ml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as err:
            problems.append(f"{path.relative_to(ROOT)}: not YAML: {err}")
            continue
        for d in docs:
            if isinstance(d, dict) and d.get("kind") == "Secret" and (d.get("data") or d.get("stringData")):
                problems.append(f"{path.relative_to(ROOT)}: Secret {d.get('metadata', {}).get('name')} with data")
            if isinstance(d, dict) and ("secretGenerator" in d):
                problems.append(f"{path.relative_to(ROOT)}: secretGenerator: secrets are created out of band")
    return problems


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if not stripped.endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def check_dockerfile(path: Path = DOCKERFILE, makefile: Path = ROOT / "Makefile") -> list[str]:
    where = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if not path.is_file():
        return [f"{where}: missing"]
    ins = dockerfile_instructions(path.read_text(encoding="utf-8"))
    args = {}
    for word, rest in ins:
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args.setdefault(key.strip(), value.strip().strip('"'))

    def expand(s: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), s)

    problems: list[str] = []
    froms = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    if len(froms) < 2:
        problems.append(f"{where}: not multi-stage (a builder stage and a final stage)")
        return problems
    final = ins[froms[-1]:]
    builder = ins[froms[0]:froms[-1]]
    base = expand(ins[froms[-1]][1].split()[0])
    if not base.startswith("python:3.11-slim"):
        problems.append(f"{where}: the final stage is {base}, not python:3.11-slim")
    runs = " ".join(rest for w, rest in builder if w == "RUN")
    expanded_runs = expand(runs)
    if "uv sync" not in runs or "--frozen" not in runs or "--no-dev" not in runs:
        problems.append(f"{where}: the builder does not install the lock with `uv sync --frozen --no-dev`")
    if not any(w == "COPY" and "uv.lock" in rest for w, rest in builder):
        problems.append(f"{where}: the builder does not copy uv.lock")
    make_text = makefile.read_text(encoding="utf-8") if makefile.is_file() else ""
    m = re.search(r"^UV_VERSION\s*:=\s*(\S+)", make_text, re.M)
    if m and f"uv=={m.group(1)}" not in expanded_runs:
        problems.append(f"{where}: uv is not pinned to the Makefile's UV_VERSION {m.group(1)}")
    users = [expand(rest) for w, rest in final if w == "USER"]
    if not users:
        problems.append(f"{where}: no USER in the final stage (it would run as root)")
    else:
        user = users[-1].split(":")[0]
        if user in ("root", "0") or not user.isdigit():
            problems.append(f"{where}: USER {users[-1]} must be a numeric non-root uid (runAsNonRoot checks it)")
    env = " ".join(expand(rest) for w, rest in final if w == "ENV")
    if not re.search(r"PYTHONUNBUFFERED=1\b", env):
        problems.append(f"{where}: PYTHONUNBUFFERED=1 is not set in the final stage")
    for w, rest in ins:
        if w in ("ENV", "ARG") and SECRET_NAME.search(rest.split("=")[0]):
            problems.append(f"{where}: {w} {rest.split('=')[0]} looks like a secret baked into the image")
    starts = " ".join(rest for w, rest in final if w in ("ENTRYPOINT", "CMD"))
    if "tsunagu.serve" not in starts:
        problems.append(f"{where}: the image does not start python -m tsunagu.serve")
    if not (ROOT / "tsunagu" / "serve.py").is_file():
        problems.append("tsunagu/serve.py (the image's module) does not exist")
    for w, rest in final:
        if w == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--") and not (ROOT / src).exists():
                    problems.append(f"{where}: COPY {src}: no such path in the repository")
    for w, rest in final:
        if w == "COPY" and "--from" in rest and "/src" in rest:
            problems.append(f"{where}: the final stage copies the builder's sources; only the venv and the code")
    return problems


METRIC = re.compile(r"\b((?:tsunagu|kafka|kube)_[a-z0-9_]+)")
PANELS_NEEDED = ("answer rate", "queue", "busy", "wait", "lag", "routing", "rejected")


def dashboard_metrics(path: Path = DASHBOARD) -> tuple[set[str], str, list[str]]:
    """(metric names the queries read, without histogram suffixes; the panels' titles; problems)"""
    where = path.name
    try:
        board = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return set(), "", [f"{where}: {err}"]
    problems: list[str] = []
    names: set[str] = set()
    panels = [p for p in board.get("panels") or [] if p.get("type") != "row"]
    if not panels:
        problems.append(f"{where}: no panels")
    for panel in panels:
        title = panel.get("title") or f"panel {panel.get('id')}"
        targets = panel.get("targets") or []
        if not targets or not all(t.get("expr") for t in targets):
            problems.append(f"{where}: {title}: every panel needs Prometheus targets with expr")
        for t in targets:
            names |= {re.sub(r"_(bucket|sum|count)$", "", n) for n in METRIC.findall(t.get("expr", ""))}
    titles = " ".join(str(p.get("title", "")).lower() for p in panels)
    return names, titles, problems


def check_dashboard(path: Path = DASHBOARD, readme: Path = DEPLOY_README) -> list[str]:
    """Valid JSON, the panels ops need, and every metric it reads documented in deploy/README.md."""
    names, titles, problems = dashboard_metrics(path)
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    for name in sorted(names):
        if f"`{name}`" not in text:
            problems.append(f"{path.name}: metric {name} is not documented in deploy/README.md")
    for word in PANELS_NEEDED if titles else ():
        if word not in titles:
            problems.append(f"{path.name}: no panel about {word}")
    return problems


def check_all(overlays: Iterable[str] = OVERLAYS) -> list[str]:
    facts = code_facts()
    problems: list[str] = []
    for overlay in overlays:
        problems += check_overlay(overlay, facts=facts)
    problems += committed_secrets()
    problems += check_dockerfile()
    problems += check_dashboard()
    return list(dict.fromkeys(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", dest="show", choices=OVERLAYS, help="print the rendered overlay and exit")
    args = parser.parse_args(argv)
    if args.show:
        print(yaml.safe_dump_all(render(args.show), sort_keys=False), end="")
        return 0
    problems = check_all()
    for overlay in OVERLAYS:
        try:
            kinds: dict[str, int] = {}
            for obj in render(overlay):
                kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
            print(f"{overlay}: {sum(kinds.values())} resources ({', '.join(f'{n} {k}' for k, n in kinds.items())})")
        except KustomizeError:
            pass
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"ok: schemas (Kubernetes {K8S_VERSION}), custom resources, cross-references, Dockerfile, dashboard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
