"""`tsunagu directory load / export / lookup` against a real PostgreSQL."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tsunagu_tools.directory import directory_app

pytestmark = pytest.mark.integration


def tsunagu(settings, *args: str) -> SimpleNamespace:
    """`tsunagu directory ...` in this process (a subprocess would spend seconds importing every service)."""
    assert args[0] == "directory"
    env = {"DATABASE_URL": settings.database_url, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "COLUMNS": "200"}
    result = CliRunner().invoke(directory_app, list(args[1:]), env=env)
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def test_a_directory_file_is_loaded_exported_and_looked_up(settings, tmp_path):
    shipped = tmp_path / "shipped.json"
    assert tsunagu(settings, "directory", "export", "--generated", "-o", str(shipped)).returncode == 0
    directory = json.loads(shipped.read_text())
    # a partner NPO serving Chiyoda joins
    directory["organizations"].append({
        "id": "npo-yorisoi", "name": "よりそいNPO（デモ）", "receiver_type": "npo", "demo": True,
        "contacts": [{"kind": "url", "value": "https://demo.invalid/receivers/npo-yorisoi"}],
        "services": [{"id": "npo-yorisoi-svc", "name": "同行支援", "receiver_type": "npo", "areas": ["131016"],
                      "schedules": [{"weekdays": "mon-fri", "opens": "10:00:00", "closes": "18:00:00"}]}],
    })
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(directory, ensure_ascii=False))
    loaded = tsunagu(settings, "directory", "load", str(edited))
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded 2651 organisations" in loaded.stderr

    looked = tsunagu(settings, "directory", "lookup", "131016", "--need", "npo")
    assert looked.returncode == 0, looked.stderr
    order = [line.split("│")[2].strip() for line in looked.stdout.splitlines() if line.count("│") >= 4]
    assert order == ["npo-yorisoi", "muni-131016", "srsc-131016", "srsc-pref-13", "secretariat"]

    exported = tmp_path / "exported.json"
    assert tsunagu(settings, "directory", "export", "-o", str(exported)).returncode == 0
    again = json.loads(exported.read_text())
    assert sorted(o["id"] for o in again["organizations"]) == sorted(o["id"] for o in directory["organizations"])

    bad = tmp_path / "bad.json"
    bad.write_text(edited.read_text().replace('"areas": ["131016"]', '"areas": ["131017"]'))
    refused = tsunagu(settings, "directory", "load", str(bad))
    assert refused.returncode == 1 and "check digit" in refused.stderr
    after = tmp_path / "after.json"
    tsunagu(settings, "directory", "export", "-o", str(after))
    assert len(json.loads(after.read_text())["organizations"]) == 2651  # nothing changed
