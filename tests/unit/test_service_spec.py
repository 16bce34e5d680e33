"""tsunagu/service.py: a service's spec is the one place its group and topics are declared."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from services.metrics.settings import MetricsSettings
from tsunagu import topics
from tsunagu.service import AUTH, Migrations, ServiceSpec
from tsunagu.settings import Settings

SPEC = ServiceSpec(name="intake", summary="s", group="intake", consumes=(topics.INGRESS,),
                   produces=(topics.CONTACT_EVENTS,), migrations=(AUTH, Migrations("intake", None, inbox_outbox=True)))


class Broker:
    """Records what a subscriber is asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    def subscriber(self, *names: str, **options: Any) -> str:
        self.calls.append((names, options))
        return "subscriber"


def settings(cls: type[Settings] = Settings, /, **overrides: Any) -> Settings:
    return cls(topic_prefix="t.", consumer_group_prefix="run1-", **overrides)


def test_the_subscriber_takes_its_group_and_topics_from_the_spec():
    broker = Broker()
    SPEC.subscriber(broker, settings(), title="x", description="y", max_records=5)
    [(names, options)] = broker.calls
    assert names == ("t.intake.ingress",)
    assert options["group_id"] == "run1-intake"
    assert options["max_records"] == 5


def test_a_second_consumed_topic_is_in_the_same_group():
    two = dataclasses.replace(SPEC, consumes=(topics.INGRESS, topics.ROUTING_DECISIONS))
    broker = Broker()
    two.subscriber(broker, settings(), title="a", description="a", only=(topics.INGRESS,))
    two.subscriber(broker, settings(), title="b", description="b", only=(topics.ROUTING_DECISIONS,))
    assert [(names, o["group_id"]) for names, o in broker.calls] == [
        (("t.intake.ingress",), "run1-intake"), (("t.routing.decisions",), "run1-intake")]
    assert two.topics_in(settings()) == ["t.intake.ingress", "t.routing.decisions"]


def test_a_topic_outside_the_spec_is_refused():
    with pytest.raises(ValueError, match="does not consume"):
        SPEC.subscriber(Broker(), settings(), title="x", description="y", only=(topics.CONTACT_EVENTS,))
    with pytest.raises(ValueError, match="not topics of tsunagu.topics"):
        dataclasses.replace(SPEC, consumes=("contact.event",))


def test_a_group_setting_renames_the_group():
    metrics = dataclasses.replace(SPEC, name="metrics", group="metrics", group_setting="metrics_consumer_group")
    assert metrics.consumer_group(settings(MetricsSettings)) == "run1-metrics"
    assert metrics.consumer_group(settings(MetricsSettings, metrics_consumer_group="metrics-v2")) == "run1-metrics-v2"


def test_the_port_is_the_services_setting():
    assert SPEC.port_setting == "intake_port"
    assert SPEC.default_port == Settings.model_fields["intake_port"].default
    assert SPEC.port(settings(intake_port=9001)) == 9001
    assert SPEC.schema == "intake"
