"""Settings are validated at start, and a bad value says which variable and why."""

from __future__ import annotations

import pytest

from tsunagu.settings import DEV_CALLER_KEY_SECRET, SettingsError, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("TSUNAGU_ENV", "TSUNAGU_CALLER_KEY_SECRET", "TSUNAGU_PARTITIONS", "TSUNAGU_INTAKE_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_valid_in_dev():
    settings = get_settings()
    assert settings.env == "dev" and settings.partitions == 12
    assert settings.topic("contact.events") == "tsunagu.contact.events"
    assert settings.caller_secret() == DEV_CALLER_KEY_SECRET.encode()


def test_a_bad_number_names_the_variable(monkeypatch):
    monkeypatch.setenv("TSUNAGU_PARTITIONS", "many")
    with pytest.raises(SettingsError) as err:
        get_settings()
    assert "TSUNAGU_PARTITIONS" in str(err.value)


def test_a_port_out_of_range_names_the_variable(monkeypatch):
    monkeypatch.setenv("TSUNAGU_INTAKE_PORT", "70000")
    with pytest.raises(SettingsError) as err:
        get_settings()
    assert "TSUNAGU_INTAKE_PORT" in str(err.value)


def test_production_pseudonymises_with_no_secret_but_a_configured_one(monkeypatch):
    monkeypatch.setenv("TSUNAGU_ENV", "prod")
    settings = get_settings()  # routing, referral and metrics never see a caller identifier
    with pytest.raises(SettingsError) as err:
        settings.caller_secret()  # intake does
    assert "TSUNAGU_CALLER_KEY_SECRET" in str(err.value)


def test_production_refuses_the_built_in_dev_secret(monkeypatch):
    monkeypatch.setenv("TSUNAGU_ENV", "prod")
    monkeypatch.setenv("TSUNAGU_CALLER_KEY_SECRET", DEV_CALLER_KEY_SECRET)
    with pytest.raises(SettingsError, match="dev secret"):
        get_settings()


def test_production_accepts_a_real_secret_and_never_shows_it(monkeypatch):
    secret = "x" * 40
    monkeypatch.setenv("TSUNAGU_ENV", "prod")
    monkeypatch.setenv("TSUNAGU_CALLER_KEY_SECRET", secret)
    settings = get_settings()
    assert settings.caller_secret() == secret.encode()
    assert secret not in repr(settings)


def test_a_services_own_knob_is_read_and_checked_by_that_service_alone(monkeypatch):
    from tsunagu_tools.services import settings_of

    monkeypatch.setenv("TSUNAGU_INTAKE_BURST", "10")  # below a full batch: intake must not start
    with pytest.raises(SettingsError, match="TSUNAGU_INTAKE_BURST"):
        settings_of("intake")
    monkeypatch.setenv("TSUNAGU_ROUTING_ORDER", "event_time")
    routing = settings_of("routing")
    assert routing.routing_order == "event_time"  # type: ignore[attr-defined]
    assert not hasattr(routing, "intake_burst") and not hasattr(get_settings(), "routing_order")
