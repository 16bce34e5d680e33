"""deploy/: both overlays pass `make k8s-validate`'s checks, and the checks catch broken manifests."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("deploy_validate", ROOT / "deploy" / "validate.py")
assert _spec and _spec.loader
v = importlib.util.module_from_spec(_spec)
sys.modules["deploy_validate"] = v
_spec.loader.exec_module(v)

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def facts():
    return v.code_facts()


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    return {o: v.render(o) for o in v.OVERLAYS}


def named(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(objects: Objects, service: str) -> dict[str, Any]:
    return named(objects, "Deployment", f"tsunagu-{service}")["spec"]["template"]["spec"]["containers"][0]


def broken(rendered, facts, overlay: str, change: Callable[[Objects], None]) -> list[str]:
    objects = copy.deepcopy(rendered[overlay])
    change(objects)
    return v.check_overlay(overlay, objects=objects, facts=facts)


def has(problems: list[str], *fragments: str) -> bool:
    return any(all(f in p for f in fragments) for p in problems)


# --- the real manifests pass ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", v.OVERLAYS)
def test_overlay_passes_every_check(overlay, facts):
    assert v.check_overlay(overlay, facts=facts) == []


def test_dockerfile_dashboard_and_repository_pass():
    assert v.check_dockerfile() == []
    assert v.check_dashboard() == []
    assert v.committed_secrets() == []


def test_the_checker_reads_groups_and_topics_from_the_code(facts):
    assert set(facts.services) == {"intake", "routing", "referral", "metrics"}
    assert facts.problems == []
    seen = {s: (facts.group_of(s, {}), set(c.topics)) for s, c in facts.consumers.items()}
    assert seen == {
        "intake": ("intake", {"intake.ingress"}),
        "routing": ("routing", {"contact.events"}),
        "referral": ("referral", {"consultation.events"}),
        "metrics": ("metrics", {"contact.events", "routing.decisions", "consultation.events", "referral.events"}),
    }
    assert {"/health/live", "/health/ready"} <= set(facts.health_paths)


def test_prod_is_replicated_and_dev_is_small(rendered):
    prod, dev = rendered["prod"], rendered["dev"]
    assert named(prod, "KafkaNodePool", "dual-role")["spec"]["replicas"] == 3
    assert named(dev, "KafkaNodePool", "dual-role")["spec"]["replicas"] == 1
    assert named(prod, "Cluster", "tsunagu-pg")["spec"]["instances"] == 3
    assert named(dev, "Cluster", "tsunagu-pg")["spec"]["instances"] == 1
    assert named(prod, "ConfigMap", "tsunagu-config")["data"]["TSUNAGU_ENV"] == "prod"
    for topic in (o for o in prod if o["kind"] == "KafkaTopic"):
        assert (topic["spec"]["replicas"], topic["spec"]["config"]["min.insync.replicas"]) == (3, 2)
    assert all(c["image"] == "registry.example.org/tsunagu/tsunagu:0.1.0"
               for o in prod for c in v.containers_of(o))


# --- broken manifests fail ----------------------------------------------------------------------


def test_a_wrong_consumer_group_fails(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-routing")["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "router"

    assert has(broken(rendered, facts, "prod", change), "ScaledObject/tsunagu-routing", "'router'", "'routing'")


def test_a_group_the_code_does_not_use_fails(rendered, facts):
    """The other direction: the code's group changes, the manifests do not."""
    other = copy.deepcopy(facts)
    other.consumers["referral"] = v.Consumer("referrals", None, ("consultation.events",))
    problems = v.check_overlay("dev", objects=copy.deepcopy(rendered["dev"]), facts=other)
    assert has(problems, "ScaledObject/tsunagu-referral", "'referrals'")


def test_a_wrong_topic_name_fails(rendered, facts):
    def change(objects):
        named(objects, "KafkaTopic", "contact-events")["spec"]["topicName"] = "tsunagu.contact.event"

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "tsunagu.contact.events (tsunagu/topics.py) has no KafkaTopic")
    assert has(problems, "tsunagu.contact.event is not a topic of tsunagu/topics.py")
    assert has(problems, "ScaledObject/tsunagu-routing", "has no KafkaTopic")


def test_a_trigger_on_a_topic_the_service_does_not_consume_fails(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-metrics")["spec"]["triggers"][1]["metadata"]["topic"] = (
            "tsunagu.intake.ingress")

    assert has(broken(rendered, facts, "dev", change), "ScaledObject/tsunagu-metrics", "but metrics consumes")


def test_more_replicas_than_partitions_fails(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-intake")["spec"]["maxReplicaCount"] = 13

    assert has(broken(rendered, facts, "prod", change), "13 > 12 partitions")


def test_workers_count_against_partitions(rendered, facts):
    def change(objects):
        named(objects, "ConfigMap", "tsunagu-config")["data"]["TSUNAGU_WORKERS"] = "2"

    assert has(broken(rendered, facts, "prod", change), "ScaledObject/tsunagu-metrics", "24 > 12 partitions")


def test_a_committed_secret_or_literal_secret_fails(rendered, facts):
    def change(objects):
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tsunagu-caller-key",
                        "namespace": "tsunagu"}, "stringData": {"secret": "x" * 40}})
        env = container(objects, "intake")["env"]
        env[:] = [e for e in env if e["name"] != "DATABASE_URL"] + [
            {"name": "DATABASE_URL", "value": "postgresql://tsunagu:pw@db/tsunagu"}]

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "Secret/tsunagu-caller-key", "committed")
    assert has(problems, "Deployment/tsunagu-intake", "DATABASE_URL has a literal value")
    assert has(problems, "Deployment/tsunagu-intake", "DATABASE_URL is not taken from a Secret")


def test_the_caller_key_secret_is_intakes_alone(rendered, facts):
    def change(objects):
        intake, routing = container(objects, "intake"), container(objects, "routing")
        routing["env"] += [e for e in intake["env"] if e["name"] == "TSUNAGU_CALLER_KEY_SECRET"]
        intake["env"] = [e for e in intake["env"] if e["name"] != "TSUNAGU_CALLER_KEY_SECRET"]

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "Deployment/tsunagu-routing", "holds TSUNAGU_CALLER_KEY_SECRET, which only intake needs")
    assert has(problems, "Deployment/tsunagu-intake", "TSUNAGU_CALLER_KEY_SECRET is not taken from a Secret")


def test_wrong_ports_probes_and_images_fail(rendered, facts):
    def change(objects):
        c = container(objects, "referral")
        c["ports"][0]["containerPort"] = 8080
        c["readinessProbe"]["httpGet"]["path"] = "/healthz"
        container(objects, "metrics")["image"] = "registry.example.org/tsunagu/tsunagu:0.0.9"

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "Deployment/tsunagu-referral", "container port http is 8080", "8083")
    assert has(problems, "Deployment/tsunagu-referral", "readinessProbe is /healthz")
    assert has(problems, "Deployment/tsunagu-metrics", "0.0.9 is not the overlay's", "tsunagu:0.1.0")


def test_insecure_pods_and_dev_settings_in_prod_fail(rendered, facts):
    def change(objects):
        c = container(objects, "routing")
        c["securityContext"]["readOnlyRootFilesystem"] = False
        named(objects, "Deployment", "tsunagu-routing")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
        named(objects, "ConfigMap", "tsunagu-config")["data"]["TSUNAGU_ENV"] = "dev"
        named(objects, "ConfigMap", "tsunagu-config")["data"]["TSUNAGU_LOG_LEVEL"] = "verbose"

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "Deployment/tsunagu-routing", "not read-only")
    assert has(problems, "Deployment/tsunagu-routing", "terminationGracePeriodSeconds")
    assert has(problems, "TSUNAGU_ENV is 'dev' in prod")
    assert has(problems, "settings:", "TSUNAGU_LOG_LEVEL")


def test_schema_violations_fail(rendered, facts):
    def change(objects):
        named(objects, "Service", "tsunagu-intake")["spec"]["prots"] = []
        named(objects, "PodDisruptionBudget", "tsunagu-metrics")["spec"]["maxUnavailable"] = [1]

    problems = broken(rendered, facts, "dev", change)
    assert has(problems, "Service/tsunagu-intake", "schema", "prots")
    assert has(problems, "PodDisruptionBudget/tsunagu-metrics", "schema")


def test_an_open_egress_or_an_open_api_fails(rendered, facts):
    def change(objects):
        egress = named(objects, "NetworkPolicy", "tsunagu-services-egress")["spec"]["egress"]
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
        named(objects, "NetworkPolicy", "tsunagu-routing-ingress")["spec"]["ingress"][0].pop("from")

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "tsunagu-services-egress", "not Kafka, PostgreSQL")
    assert has(problems, "tsunagu-routing-ingress", "routing is open to everyone")


def test_custom_resources_essentials_fail(rendered, facts):
    def change(objects):
        named(objects, "Kafka", "tsunagu")["metadata"]["annotations"].pop("strimzi.io/kraft")
        named(objects, "KafkaNodePool", "dual-role")["spec"]["replicas"] = 1
        named(objects, "Cluster", "tsunagu-pg")["spec"]["bootstrap"]["initdb"]["database"] = "app"
        named(objects, "OpenTelemetryCollector", "tsunagu-otel")["spec"]["config"]["service"]["pipelines"]["traces"][
            "exporters"] = ["jaeger"]
        named(objects, "ConfigMap", "tsunagu-config")["data"]["KAFKA_BOOTSTRAP_SERVERS"] = "kafka:9092"

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "Kafka/tsunagu", "not KRaft")
    assert has(problems, "prod needs 3 brokers")
    assert has(problems, "Cluster/tsunagu-pg", "'app'")
    assert has(problems, "exporter jaeger, which is not defined")
    assert has(problems, "KAFKA_BOOTSTRAP_SERVERS 'kafka' is not tsunagu-kafka-bootstrap")


# --- the kustomize subset -------------------------------------------------------------------------


def test_strategic_merge_merges_env_by_name_and_replaces_other_lists():
    base = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}], "args": ["p"]}]}}}}
    patch = {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}], "args": ["q"]}]}}}}
    v.strategic_merge(base, patch, builtin=True, where="test")
    c = base["spec"]["template"]["spec"]["containers"][0]
    assert c["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}, {"name": "Z", "value": "4"}]
    assert c["args"] == ["q"]


def test_json6902_applies_and_refuses_a_missing_path():
    obj = {"kind": "KafkaTopic", "metadata": {"name": "t"}, "spec": {"replicas": 3, "config": {"a.b": 2}}}
    v.json6902(obj, {"op": "replace", "path": "/spec/config/a.b", "value": 1}, "test")
    v.json6902(obj, {"op": "add", "path": "/spec/partitions", "value": 12}, "test")
    v.json6902(obj, {"op": "remove", "path": "/spec/replicas"}, "test")
    assert obj["spec"] == {"config": {"a.b": 1}, "partitions": 12}
    with pytest.raises(v.KustomizeError, match="no such path"):
        v.json6902(obj, {"op": "replace", "path": "/spec/replicas", "value": 1}, "test")


def test_unsupported_kustomize_features_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(v, "ROOT", tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(v.KustomizeError, match="configMapGenerator"):
        v.build(tmp_path)


def test_images_are_rewritten_by_name_only():
    objs = [{"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
        {"name": "a", "image": "tsunagu"}, {"name": "b", "image": "other/tsunagu:1"}]}}}}]
    v.apply_image(objs, {"name": "tsunagu", "newName": "r.example/t", "newTag": "2"}, v.ROOT / "k.yaml")
    images = [c["image"] for c in v.containers_of(objs[0])]
    assert images == ["r.example/t:2", "other/tsunagu:1"]


# --- Dockerfile, dashboard, code reading --------------------------------------------------------------


def test_a_root_or_unlocked_dockerfile_fails(tmp_path):
    text = v.DOCKERFILE.read_text()
    bad = tmp_path / "Dockerfile"
    bad.write_text(text.replace("USER 10001:10001", "USER root").replace("--frozen ", ""))
    problems = v.check_dockerfile(bad)
    assert has(problems, "USER root")
    assert has(problems, "uv sync --frozen --no-dev")


def test_an_undocumented_dashboard_metric_fails(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(v.DEPLOY_README.read_text().replace("`tsunagu_queue_length`", "queue"))
    assert has(v.check_dashboard(readme=readme), "tsunagu_queue_length is not documented")


def test_consumer_of_reads_a_subscriber(tmp_path):
    from tsunagu import topics

    handlers = tmp_path / "handlers.py"
    handlers.write_text(
        "from tsunagu import topics\n"
        "BOTH = (topics.CONTACT_EVENTS, topics.REFERRAL_EVENTS)\n"
        "def register(broker, settings):\n"
        "    @broker.subscriber(*(settings.topic(t) for t in BOTH), **batch_subscriber('audit', max_records=5))\n"
        "    async def on(records): ...\n"
    )
    monkey_root = v.ROOT
    try:
        v.ROOT = tmp_path
        got = v.consumer_of(handlers, topics)
    finally:
        v.ROOT = monkey_root
    assert got == v.Consumer("audit", None, ("contact.events", "referral.events"))


def test_orphan_scaled_objects_and_budgets_fail(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-referral")["spec"]["scaleTargetRef"]["name"] = "tsunagu-referrals"
        named(objects, "PodDisruptionBudget", "tsunagu-intake")["spec"]["selector"]["matchLabels"][
            "app.kubernetes.io/name"] = "gateway"

    problems = broken(rendered, facts, "dev", change)
    assert has(problems, "ScaledObject/tsunagu-referral", "'tsunagu-referrals' is not a Deployment")
    assert has(problems, "Deployment/tsunagu-referral", "0 ScaledObjects target it")
    assert has(problems, "PodDisruptionBudget/tsunagu-intake", "selects no Deployment's pods")


def _kustomize() -> list[str] | None:
    """A real kustomize, if this machine has one: $KUSTOMIZE (a kustomize or kubectl binary) or on PATH."""
    given = os.environ.get("KUSTOMIZE")
    if given:
        return [given, "build"] if Path(given).name.startswith("kustomize") else [given, "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("overlay", v.OVERLAYS)
def test_the_subset_renders_what_kustomize_renders(overlay, rendered):
    """Where a kustomize binary exists (CI with kubectl), the Python rendering must equal it exactly."""
    import yaml

    command = _kustomize()
    if command is None:
        pytest.skip("no kustomize or kubectl here (set KUSTOMIZE=/path/to/kubectl to compare)")
    out = subprocess.run([*command, str(v.K8S_DIR / "overlays" / overlay)], capture_output=True, text=True,
                         check=True).stdout
    real = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
    mine = {(d["kind"], d["metadata"]["name"]): d for d in rendered[overlay]}
    assert set(real) == set(mine)
    for key in real:
        assert json.dumps(mine[key], sort_keys=True) == json.dumps(real[key], sort_keys=True), key
