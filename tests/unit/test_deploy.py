"""deploy/: both overlays pass `make k8s-validate`'s checks, and the checks catch broken manifests."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tsunagu import topics

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location("deploy_validate", ROOT / "deploy" / "validate.py")
assert _spec and _spec.loader
v = importlib.util.module_from_spec(_spec)
sys.modules["deploy_validate"] = v
_spec.loader.exec_module(v)

from deploy.checks import files, render  # noqa: E402  (importable once validate.py has run)
from deploy.checks.code import code_facts  # noqa: E402

Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def facts():
    return v.code_facts()


@pytest.fixture(scope="module")
def rendered() -> dict[str, Objects]:
    if render.kustomize_command() is None:
        if os.environ.get("CI"):
            pytest.fail("CI has neither kustomize nor kubectl: `make k8s-validate` cannot render the overlays")
        pytest.skip("neither kustomize nor kubectl here (KUSTOMIZE=/path/to/either to name one)")
    return {o: render.render(o) for o in render.OVERLAYS}


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


def with_spec(facts, service: str, **changes):
    """The code's facts with one service's spec changed (the code moves, the manifests do not)."""
    other = copy.copy(facts)
    other.specs = dict(facts.specs) | {service: dataclasses.replace(facts.specs[service], **changes)}
    return other


# --- the real manifests pass ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", render.OVERLAYS)
def test_overlay_passes_every_check(overlay, rendered, facts):
    assert v.check_overlay(overlay, objects=rendered[overlay], facts=facts) == []


def test_dockerfile_dashboard_and_repository_pass():
    assert files.check_dockerfile() == []
    assert files.check_dashboard() == []
    assert files.committed_secrets() == []


def test_the_checker_reads_groups_and_topics_from_the_specs(facts):
    assert set(facts.services) == {"intake", "routing", "referral", "metrics"}
    assert facts.problems == []
    seen = {name: (spec.group, set(spec.consumes)) for name, spec in facts.specs.items()}
    assert seen == {
        "intake": ("intake", {"intake.ingress", "routing.decisions"}),
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
               for o in prod for c in render.containers_of(o))


# --- broken manifests fail ----------------------------------------------------------------------


def test_a_wrong_consumer_group_fails(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-routing")["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "router"

    assert has(broken(rendered, facts, "prod", change), "ScaledObject/tsunagu-routing", "'router'", "'routing'")


def test_a_group_the_spec_does_not_declare_fails(rendered, facts):
    """The other direction: the spec's group changes, the manifests do not."""
    problems = v.check_overlay("dev", objects=copy.deepcopy(rendered["dev"]),
                               facts=with_spec(facts, "referral", group="referrals"))
    assert has(problems, "ScaledObject/tsunagu-referral", "'referrals'", "(its spec)")


def test_a_topic_the_spec_consumes_without_a_trigger_fails(rendered, facts):
    """A service that comes to consume another topic needs a trigger on it (intake consumes routing's
    decisions for its assignments: its ScaledObject has a trigger for each of its two topics)."""
    spec = with_spec(facts, "routing", consumes=(topics.CONTACT_EVENTS, topics.REFERRAL_EVENTS))
    problems = v.check_overlay("prod", objects=copy.deepcopy(rendered["prod"]), facts=spec)
    assert has(problems, "ScaledObject/tsunagu-routing", "but routing consumes", "tsunagu.referral.events")

    def drop_second(objects):
        del named(objects, "ScaledObject", "tsunagu-intake")["spec"]["triggers"][1]

    assert has(broken(rendered, facts, "prod", drop_second), "ScaledObject/tsunagu-intake", "but intake consumes",
               "tsunagu.routing.decisions")


def test_specs_that_disagree_with_the_settings_or_the_topics_fail(facts):
    specs = dict(facts.specs)
    specs["metrics"] = dataclasses.replace(specs["metrics"], group="metrics-v2")
    specs["intake"] = dataclasses.replace(specs["intake"], consumes=(topics.CONTACT_EVENTS,))
    problems = code_facts(specs.values()).problems
    assert has(problems, "metrics's group is 'metrics-v2'", "metrics_consumer_group defaults to 'metrics'")
    assert has(problems, "no service's spec consumes or produces intake.ingress")


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


def test_custom_resources_choices_fail(rendered, facts):
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


# --- custom resources against their operators' CRDs (deploy/crds/) -------------------------------------


def test_a_scaled_object_polling_often_fails(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-routing")["spec"]["pollingInterval"] = "often"

    problems = broken(rendered, facts, "prod", change)
    assert has(problems, "ScaledObject/tsunagu-routing", "CRD keda.sh/v1alpha1", "spec.pollingInterval",
               "'often' is not of type 'integer'")


def test_a_misspelt_field_of_a_custom_resource_fails(rendered, facts):
    def change(objects):
        so = named(objects, "ScaledObject", "tsunagu-metrics")["spec"]
        so["cooldownPeriodd"] = so.pop("cooldownPeriod", 300)
        named(objects, "Cluster", "tsunagu-pg")["spec"]["instance"] = 3
        named(objects, "KafkaTopic", "contact-events")["spec"]["partition"] = 12

    problems = broken(rendered, facts, "dev", change)
    assert has(problems, "ScaledObject/tsunagu-metrics", "'cooldownPeriodd' was unexpected")
    assert has(problems, "Cluster/tsunagu-pg", "CRD postgresql.cnpg.io/v1", "'instance' was unexpected")
    assert has(problems, "KafkaTopic/contact-events", "'partition' was unexpected")


def test_where_a_crd_keeps_unknown_fields_they_pass(rendered, facts):
    """Strimzi's broker `config` and the collector's `config` are free-form in their CRDs."""
    def change(objects):
        named(objects, "Kafka", "tsunagu")["spec"]["kafka"]["config"]["log.cleaner.threads"] = 2
        named(objects, "OpenTelemetryCollector", "tsunagu-otel")["spec"]["config"]["extensions"] = {"health_check": {}}

    assert broken(rendered, facts, "dev", change) == []


def test_missing_required_fields_and_unknown_kinds_fail(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-intake")["spec"].pop("triggers")
        named(objects, "KafkaNodePool", "dual-role")["spec"].pop("storage")
        objects.append({"apiVersion": "example.org/v1", "kind": "Widget",
                        "metadata": {"name": "w", "namespace": "tsunagu-dev"}})

    problems = broken(rendered, facts, "dev", change)
    assert has(problems, "ScaledObject/tsunagu-intake", "'triggers' is a required property")
    assert has(problems, "KafkaNodePool/dual-role", "'storage' is a required property")
    assert has(problems, "Widget/w", "no CRD schema for example.org/v1 Widget")


def test_every_custom_kind_of_the_overlays_has_a_vendored_crd(rendered):
    from deploy.checks import schemas

    crds = schemas.crd_validators()
    kinds = {(o["apiVersion"], o["kind"]) for objects in rendered.values() for o in objects
             if not render.is_builtin(o)}
    assert kinds <= set(crds)
    readme = (ROOT / "deploy" / "README.md").read_text()
    for _, source in crds.values():
        assert source.split()[0].removeprefix("github.com/") in readme


# --- Dockerfile, dashboard, code reading --------------------------------------------------------------


def test_a_root_or_unlocked_dockerfile_fails(tmp_path):
    text = files.DOCKERFILE.read_text()
    bad = tmp_path / "Dockerfile"
    bad.write_text(text.replace("USER 10001:10001", "USER root").replace("--frozen ", ""))
    problems = files.check_dockerfile(bad)
    assert has(problems, "USER root")
    assert has(problems, "uv sync --frozen --no-dev")


def test_an_undocumented_dashboard_metric_fails(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(files.DEPLOY_README.read_text().replace("`tsunagu_queue_length`", "queue"))
    assert has(files.check_dashboard(readme=readme), "tsunagu_queue_length is not documented")


def test_orphan_scaled_objects_and_budgets_fail(rendered, facts):
    def change(objects):
        named(objects, "ScaledObject", "tsunagu-referral")["spec"]["scaleTargetRef"]["name"] = "tsunagu-referrals"
        named(objects, "PodDisruptionBudget", "tsunagu-intake")["spec"]["selector"]["matchLabels"][
            "app.kubernetes.io/name"] = "gateway"

    problems = broken(rendered, facts, "dev", change)
    assert has(problems, "ScaledObject/tsunagu-referral", "'tsunagu-referrals' is not a Deployment")
    assert has(problems, "Deployment/tsunagu-referral", "0 ScaledObjects target it")
    assert has(problems, "PodDisruptionBudget/tsunagu-intake", "selects no Deployment's pods")
