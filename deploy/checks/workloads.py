"""Deployments, pods, Services, PDBs and KEDA ScaledObjects, against the services' specs: one
Deployment per spec running it, its port and probes, its settings, and a ScaledObject whose kafka
triggers name the spec's consumer group and exactly the topics it consumes."""

from __future__ import annotations

import re
from typing import Any

from tsunagu.service import ServiceSpec
from tsunagu.settings import Settings

from .code import CodeFacts, pod_settings
from .render import CLUSTER_SCOPED, IMAGE, ROOT, Rendered, containers_of, ref, selects, split_image

DEPLOY_README = ROOT / "deploy" / "README.md"
MIN_GRACE_SECONDS = 30  # uvicorn's 10 s graceful HTTP drain + stopping consumers (offset commit) + the outbox
CONNECTIONS_PER_PROCESS = 14  # tsunagu.db.create_pool's max_size (10) + an outbox pool (4)
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE|DATABASE_URL|_KEY$", re.I)


def check_generic(r: Rendered) -> list[str]:
    problems = []
    seen: set[tuple[str, str]] = set()
    for obj in r.objects:
        key = (obj["kind"], obj.get("metadata", {}).get("name", ""))
        if key in seen:
            problems.append(f"{ref(obj)}: defined twice")
        seen.add(key)
        if obj["kind"] not in CLUSTER_SCOPED and obj["metadata"].get("namespace") != r.namespace:
            problems.append(f"{ref(obj)}: namespace {obj['metadata'].get('namespace')!r}, not {r.namespace!r}")
        if obj["kind"] == "Secret" and (obj.get("data") or obj.get("stringData")):
            problems.append(f"{ref(obj)}: a Secret with data is committed; reference it, create it out of band")
        if obj["kind"] == "ConfigMap":
            for k in obj.get("data") or {}:
                if SECRET_NAME.search(k):
                    problems.append(f"{ref(obj)}: {k} looks like a secret; it belongs in a Secret")
    if r.namespace and not r.named("Namespace", r.namespace):
        problems.append(f"Namespace/{r.namespace}: the overlay's namespace is not among its resources")
    if not r.image:
        problems.append(f"overlays/{r.overlay}: images: does not set {IMAGE}")
    return problems


def config_env(r: Rendered, container: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """The environment a container starts with (ConfigMaps, then env), and the names of the
    variables filled from Secrets."""
    env: dict[str, str] = {}
    from_secrets: list[str] = []
    for source in container.get("envFrom") or []:
        cm = r.named("ConfigMap", (source.get("configMapRef") or {}).get("name"))
        if cm is not None:
            env.update(cm.get("data") or {})
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in (var.get("valueFrom") or {}):
            from_secrets.append(var["name"])
    return env, from_secrets


def _probe(probe: dict[str, Any] | None, ports: dict[str, int]) -> tuple[str | None, int | None]:
    get = (probe or {}).get("httpGet") or {}
    port = get.get("port")
    return get.get("path"), ports.get(port) if isinstance(port, str) else port


def check_pod(r: Rendered, spec: ServiceSpec, dep: dict[str, Any], c: dict[str, Any]) -> list[str]:
    """Security, resources and shutdown of the service's pod."""
    where, pod = ref(dep), dep["spec"]["template"]["spec"]
    problems = []
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
    return problems


def check_env(r: Rendered, spec: ServiceSpec, dep: dict[str, Any], c: dict[str, Any],
              env: dict[str, str], from_secrets: list[str]) -> list[str]:
    """Secrets come from Secrets (the caller key to intake alone), ConfigMaps exist."""
    where, problems = ref(dep), []
    for var in c.get("env") or []:
        if "value" in var and SECRET_NAME.search(var["name"]):
            problems.append(f"{where}: {var['name']} has a literal value; it must come from a Secret")
        cm_ref = (var.get("valueFrom") or {}).get("configMapKeyRef")
        if cm_ref and not r.named("ConfigMap", cm_ref.get("name")):
            problems.append(f"{where}: ConfigMap {cm_ref.get('name')} does not exist")
        sref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if sref and var["name"] == "DATABASE_URL":
            names = {f"{cl['metadata']['name']}-app" for cl in r.of("Cluster")}
            if sref.get("name") not in names or sref.get("key") not in ("uri", "fqdn-uri"):
                problems.append(f"{where}: DATABASE_URL from {sref.get('name')}/{sref.get('key')}, not the "
                                f"CloudNativePG app Secret's uri ({', '.join(sorted(names)) or 'no Cluster'})")
    for source in c.get("envFrom") or []:
        cm_name = (source.get("configMapRef") or {}).get("name")
        if cm_name and not r.named("ConfigMap", cm_name):
            problems.append(f"{where}: ConfigMap {cm_name} does not exist")
        if "secretRef" in source:
            problems.append(f"{where}: envFrom a Secret: name each secret variable instead")
    for required in ("DATABASE_URL", "TSUNAGU_CALLER_KEY_SECRET"):
        if required not in from_secrets and (required == "DATABASE_URL" or spec.name == "intake"):
            problems.append(f"{where}: {required} is not taken from a Secret")
    # Least privilege: only intake pseudonymises; the services behind it never need the key.
    if spec.name != "intake" and "TSUNAGU_CALLER_KEY_SECRET" in from_secrets:
        problems.append(f"{where}: holds TSUNAGU_CALLER_KEY_SECRET, which only intake needs")
    if env.get("TSUNAGU_HTTP_HOST") != "0.0.0.0":
        problems.append(f"{where}: TSUNAGU_HTTP_HOST is {env.get('TSUNAGU_HTTP_HOST')!r}, not 0.0.0.0")
    if r.overlay == "prod" and env.get("TSUNAGU_ENV") != "prod":
        problems.append(f"{where}: TSUNAGU_ENV is {env.get('TSUNAGU_ENV')!r} in prod")
    return problems


def check_services(r: Rendered, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    deployments = {d["metadata"]["name"]: d for d in r.of("Deployment")}
    for spec in facts.specs.values():
        name = f"tsunagu-{spec.name}"
        dep = deployments.get(name)
        if dep is None:
            problems.append(f"Deployment/{name}: missing (a service of tsunagu_tools/services.py)")
            continue
        where, template = ref(dep), dep["spec"]["template"]
        if not selects(dep["spec"].get("selector"), template.get("metadata", {}).get("labels") or {}):
            problems.append(f"{where}: its selector does not select its own pod template")
        if "replicas" in dep["spec"]:
            problems.append(f"{where}: sets replicas, which its ScaledObject owns")
        c = next((c for c in template["spec"].get("containers") or [] if c.get("name") == spec.name), None)
        if c is None:
            problems.append(f"{where}: no container named {spec.name}")
            continue
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        if argv != ["python", "-m", f"services.{spec.name}"]:
            problems.append(f"{where}: runs {argv}, not python -m services.{spec.name}")
        if r.image and c.get("image") != r.image:
            problems.append(f"{where}: image {c.get('image')} is not the overlay's {r.image}")
        if split_image(str(c.get("image")))[0] == IMAGE:
            problems.append(f"{where}: image {c.get('image')} was not set by the overlay's images:")
        problems += check_pod(r, spec, dep, c)
        env, from_secrets = config_env(r, c)
        problems += check_env(r, spec, dep, c, env, from_secrets)
        settings = pod_settings(env, from_secrets, spec.settings)
        if isinstance(settings, str):
            problems.append(f"{where}: {settings}")
            continue
        port = spec.port(settings)
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        if ports.get("http") != port:
            problems.append(f"{where}: container port http is {ports.get('http')}, the service listens on {port}")
        for probe_name, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
            if path not in facts.health_paths:
                problems.append(f"code: tsunagu/health.py no longer serves {path}")
            got_path, got_port = _probe(c.get(probe_name), ports)
            if got_path != path or got_port != port:
                problems.append(f"{where}: {probe_name} is {got_path} on {got_port}, not {path} on {port}")
        problems += check_service_objects(r, spec, dep, port, settings)
    for extra in set(deployments) - {f"tsunagu-{s}" for s in facts.specs}:
        problems.append(f"Deployment/{extra}: not a service of tsunagu_tools/services.py")
    for so in r.of("ScaledObject"):
        target = so["spec"]["scaleTargetRef"]
        if target.get("kind", "Deployment") != "Deployment" or target.get("name") not in deployments:
            problems.append(f"{ref(so)}: scaleTargetRef {target.get('name')!r} is not a Deployment here")
    pod_labels = [d["spec"]["template"].get("metadata", {}).get("labels") or {} for d in deployments.values()]
    for pdb in r.of("PodDisruptionBudget"):
        if not any(selects(pdb["spec"].get("selector"), labels) for labels in pod_labels):
            problems.append(f"{ref(pdb)}: selects no Deployment's pods")
    readme = DEPLOY_README.read_text(encoding="utf-8") if DEPLOY_README.is_file() else ""
    for dep in deployments.values():
        for c in containers_of(dep):
            for var in c.get("env") or []:
                sref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if sref and f"`{sref.get('name')}`" not in readme:
                    problems.append(f"{ref(dep)}: Secret {sref.get('name')} is not documented in deploy/README.md")
    # PostgreSQL connections at full scale
    needed = sum(int(so["spec"].get("maxReplicaCount", 100)) for so in r.of("ScaledObject"))
    needed *= r.workers() * CONNECTIONS_PER_PROCESS
    for cl in r.of("Cluster"):
        limit = int(((cl["spec"].get("postgresql") or {}).get("parameters") or {}).get("max_connections", 100))
        if needed > limit:
            problems.append(f"{ref(cl)}: max_connections {limit} < {needed} that every service at its "
                            f"maxReplicaCount may open ({CONNECTIONS_PER_PROCESS} per process)")
    return problems


def check_service_objects(r: Rendered, spec: ServiceSpec, dep: dict[str, Any], port: int,
                          settings: Settings) -> list[str]:
    """The service's Service, PodDisruptionBudget and ScaledObject (its consumer group and topics)."""
    problems: list[str] = []
    name = dep["metadata"]["name"]
    labels = dep["spec"]["template"].get("metadata", {}).get("labels") or {}
    svc = r.named("Service", name)
    if svc is None:
        problems.append(f"Service/{name}: missing ({spec.name} serves HTTP on {port})")
    else:
        if not (svc["spec"].get("selector") and all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())):
            problems.append(f"{ref(svc)}: its selector does not select {ref(dep)}'s pods")
        if not any(p.get("targetPort") in ("http", port) for p in svc["spec"].get("ports") or []):
            problems.append(f"{ref(svc)}: no port targets http ({port})")
    pdbs = [p for p in r.of("PodDisruptionBudget") if selects(p["spec"].get("selector"), labels)]
    if len(pdbs) != 1:
        problems.append(f"{ref(dep)}: {len(pdbs)} PodDisruptionBudgets select its pods, not 1")
    scaled = [s for s in r.of("ScaledObject") if s["spec"]["scaleTargetRef"].get("name") == name]
    if len(scaled) != 1:
        problems.append(f"{ref(dep)}: {len(scaled)} ScaledObjects target it, not 1")
        return problems
    so = scaled[0]
    where, so_spec = ref(so), so["spec"]
    partitions = {t["spec"].get("topicName", t["metadata"]["name"]): t["spec"].get("partitions")
                  for t in r.of("KafkaTopic")}
    group = spec.consumer_group(settings)
    kafka = [t for t in so_spec["triggers"] if t.get("type") == "kafka"]
    want = spec.topics_in(settings)
    got = [(t.get("metadata") or {}).get("topic") for t in kafka]
    if sorted(map(str, got)) != sorted(want):
        problems.append(f"{where}: kafka triggers on {sorted(map(str, got))}, but {spec.name} consumes {sorted(want)} "
                        "(its spec)")
    for t in kafka:
        meta = t.get("metadata") or {}
        if meta.get("consumerGroup") != group:
            problems.append(f"{where}: consumerGroup {meta.get('consumerGroup')!r}, but {spec.name}'s group is "
                            f"{group!r} (its spec)")
        if meta.get("bootstrapServers") != settings.kafka_bootstrap_servers:
            problems.append(f"{where}: bootstrapServers {meta.get('bootstrapServers')!r} != "
                            f"KAFKA_BOOTSTRAP_SERVERS {settings.kafka_bootstrap_servers!r}")
        if not str(meta.get("lagThreshold", "")).isdigit() or int(meta["lagThreshold"]) < 1:
            problems.append(f"{where}: lagThreshold must be a positive integer (as a string)")
        if str(meta.get("allowIdleConsumers", "false")).lower() == "true":
            problems.append(f"{where}: allowIdleConsumers lets it scale past the partitions")
        n = partitions.get(meta.get("topic"))
        top = int(so_spec.get("maxReplicaCount", 100)) * r.workers()
        if n is None:
            problems.append(f"{where}: topic {meta.get('topic')} has no KafkaTopic")
        elif top > int(n):
            problems.append(f"{where}: maxReplicaCount x TSUNAGU_WORKERS = {top} > {n} partitions "
                            f"of {meta.get('topic')}")
    if not kafka:
        problems.append(f"{where}: no kafka trigger on consumer lag")
    low, high = so_spec.get("minReplicaCount", 0), so_spec.get("maxReplicaCount", 100)
    if low < 1:
        problems.append(f"{where}: minReplicaCount must be >= 1 (it serves HTTP and publishes its outbox)")
    if high < low:
        problems.append(f"{where}: maxReplicaCount must be >= minReplicaCount")
    return problems
