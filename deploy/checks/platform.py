"""Kafka (Strimzi), its topics, PostgreSQL (CloudNativePG) and the collector, against the code and
the services' settings. Their fields' shapes are the CRDs' business (schemas.py); these are the
choices the CRDs cannot know: KRaft, replication in prod, topics exactly tsunagu's."""

from __future__ import annotations

from typing import Any

from .code import CodeFacts
from .render import Rendered, ref, selects


def _nodes(pools: list[dict[str, Any]], role: str) -> int:
    return sum(int(p["spec"]["replicas"]) for p in pools if role in p["spec"]["roles"])


def check_kafka(r: Rendered, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    kafkas = r.of("Kafka")
    if len(kafkas) != 1:
        return [f"Kafka: {len(kafkas)} Kafka clusters, expected 1"]
    kafka = kafkas[0]
    kname = kafka["metadata"]["name"]
    cm = r.config()
    ann = kafka["metadata"].get("annotations") or {}
    if ann.get("strimzi.io/kraft") != "enabled" or ann.get("strimzi.io/node-pools") != "enabled":
        problems.append(f"{ref(kafka)}: not KRaft with node pools (annotations strimzi.io/kraft, node-pools)")
    spec = kafka["spec"]
    if not spec["kafka"].get("version"):
        problems.append(f"{ref(kafka)}: spec.kafka.version is not pinned")
    if "zookeeper" in spec:
        problems.append(f"{ref(kafka)}: has zookeeper (KRaft only)")
    host, _, port = str(cm.get("KAFKA_BOOTSTRAP_SERVERS", "")).partition(":")
    if host != f"{kname}-kafka-bootstrap":
        problems.append(f"ConfigMap/tsunagu-config: KAFKA_BOOTSTRAP_SERVERS {host!r} is not {kname}-kafka-bootstrap")
    used = [li for li in spec["kafka"]["listeners"] if str(li.get("port")) == port]
    if not used:
        problems.append(f"{ref(kafka)}: no listener on port {port} of KAFKA_BOOTSTRAP_SERVERS")
    elif used[0].get("tls") or used[0].get("authentication"):
        problems.append(f"{ref(kafka)}: listener {used[0].get('name')} needs TLS/auth, which tsunagu/kafka.py lacks")
    else:
        peers = used[0].get("networkPolicyPeers")
        if peers is not None and not any(selects(p.get("podSelector"), {"app.kubernetes.io/component":
                                                                        "event-service"}) for p in peers):
            problems.append(f"{ref(kafka)}: listener {used[0].get('name')}'s networkPolicyPeers exclude the services")
    config = spec["kafka"].get("config") or {}
    if config.get("auto.create.topics.enable") is not False:
        problems.append(f"{ref(kafka)}: auto.create.topics.enable must be false (every topic is a KafkaTopic)")
    pools = [p for p in r.of("KafkaNodePool") if (p["metadata"].get("labels") or {}).get("strimzi.io/cluster") == kname]
    for p in r.of("KafkaNodePool"):
        if p not in pools:
            problems.append(f"{ref(p)}: label strimzi.io/cluster is not {kname}")
    brokers, controllers = _nodes(pools, "broker"), _nodes(pools, "controller")
    if brokers < 1 or controllers < 1:
        problems.append(f"Kafka/{kname}: node pools give {brokers} brokers and {controllers} controllers")
    if r.overlay == "prod" and (brokers < 3 or controllers < 3):
        problems.append(f"Kafka/{kname}: prod needs 3 brokers and 3 controllers, has {brokers} and {controllers}")
    problems += check_topics(r, facts, kname, brokers, config)
    return problems


def check_topics(r: Rendered, facts: CodeFacts, kname: str, brokers: int, broker_config: dict[str, Any]) -> list[str]:
    """Exactly the topics of tsunagu/topics.py (which the specs consume and produce), with the prefix."""
    problems: list[str] = []
    cm = r.config()
    prefix = cm.get("TSUNAGU_TOPIC_PREFIX", facts.defaults["topic_prefix"])
    want = {f"{prefix}{t}" for t in facts.topics}
    parts = int(cm.get("TSUNAGU_PARTITIONS", facts.defaults["partitions"]))
    got = set()
    for t in r.of("KafkaTopic"):
        where = ref(t)
        s = t.get("spec") or {}
        got.add(s.get("topicName", t["metadata"]["name"]))
        if (t["metadata"].get("labels") or {}).get("strimzi.io/cluster") != kname:
            problems.append(f"{where}: label strimzi.io/cluster is not {kname}")
        if s.get("partitions") != parts:
            problems.append(f"{where}: {s.get('partitions')} partitions, TSUNAGU_PARTITIONS is {parts}")
        replicas = int(s.get("replicas", 0))
        isr = int((s.get("config") or {}).get("min.insync.replicas", broker_config.get("min.insync.replicas", 1)))
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
    spec = cl["spec"]
    if r.overlay == "prod" and spec["instances"] < 3:
        problems.append(f"{ref(cl)}: {spec['instances']} instances (3 or more needed in prod)")
    initdb = (spec.get("bootstrap") or {}).get("initdb") or {}
    if initdb.get("database") != "tsunagu":
        problems.append(f"{ref(cl)}: bootstrap.initdb.database is {initdb.get('database')!r}, not 'tsunagu'")
    if initdb.get("secret"):
        problems.append(f"{ref(cl)}: initdb.secret set: let the operator generate the app Secret")
    if not (spec.get("storage") or {}).get("size"):
        problems.append(f"{ref(cl)}: no storage.size (the operator's default is not a production volume)")
    return problems


def check_collector(r: Rendered) -> list[str]:
    problems: list[str] = []
    cols = r.of("OpenTelemetryCollector")
    if len(cols) != 1:
        return [f"OpenTelemetryCollector: {len(cols)} collectors, expected 1"]
    col = cols[0]
    config = col["spec"]["config"]  # the CRD keeps it as given: its pipelines are checked here
    protocols = ((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    if "http" not in protocols:
        problems.append(f"{ref(col)}: no OTLP/HTTP receiver (the services export OTLP over HTTP)")
    pipelines = (config.get("service") or {}).get("pipelines") or {}
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
    cm = r.config()
    endpoint = cm.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    want = f"http://{col['metadata']['name']}-collector:4318"
    if endpoint != want:
        problems.append(f"ConfigMap/tsunagu-config: OTEL_EXPORTER_OTLP_ENDPOINT {endpoint!r}, not {want} "
                        "(the operator's Service for OTLP/HTTP)")
    if cm.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf") != "http/protobuf":
        problems.append("ConfigMap/tsunagu-config: OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf (the exporter "
                        "installed is opentelemetry-exporter-otlp-proto-http)")
    return problems
