"""Writes the documents partners read without Python: JSON Schema per event type and AsyncAPI.

    python -m schemas.generate          # (re)write schemas/jsonschema/*.json and schemas/asyncapi.yaml
    python -m schemas.generate --check  # exit 1 and list the stale files if they are out of date

Output is deterministic (sorted JSON keys, a fixed order in YAML) so that ``--check`` and
the unit test can compare it byte for byte with what is committed.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from schemas.envelope import ATTRIBUTE_NAME_PATTERN, CloudEvent
from schemas.kafka import CONTENT_TYPE
from schemas.registry import EVENT_TYPES, TOPICS, EventType
from schemas.rejected import RejectedRecord
from schemas.schema_rules import open_to_extensions, partner_source

ROOT = Path(__file__).resolve().parent
JSONSCHEMA_DIR = "jsonschema"
ASYNCAPI_FILE = "asyncapi.yaml"
REJECTED_SCHEMA_FILE = "rejected-record.json"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# AsyncAPI 3.0 names JSON Schema formats application/schema+json;version=<draft>; it lists draft-07 as the one
# every tool must read and lets a document name others. Ours are 2020-12, and say so.
SCHEMA_FORMAT = "application/schema+json;version=2020-12"
# Annotations of ours in the schemas (JSON Schema 2020-12 lets unknown keywords be annotations; a strict
# validator is told about them: ajv.addVocabulary(ANNOTATION_KEYWORDS), schemas/README.md).
ANNOTATION_KEYWORDS = ("x-tsunagu", "x-labels")
TOPIC_PREFIX = "tsunagu."
INGRESS_TOPIC = "intake.ingress"
REJECTED_TOPIC = "intake.rejected"

_TOPIC_TEXT: dict[str, tuple[str, str, str]] = {
    # topic: (title, description, key description)
    INGRESS_TOPIC: (
        "受付（パートナー送信）/ Intake ingress",
        "Kafka 接続のあるパートナーが送信する生のイベント。intake が検証・仮名化して正規トピックへ流す。"
        " / Raw events from partners with broker access; intake validates, pseudonymises and republishes "
        "them. contact.received is sent in its ingress form (raw caller_id, region).",
        "partitionkey 属性、なければ subject（contact_id）/ the partitionkey attribute, else subject "
        "(the contact_id)",
    ),
    REJECTED_TOPIC: (
        "却下記録 / Rejected events",
        "intake が受け付けなかったイベントの記録（理由付き、本文は含まない）。"
        " / A record per refused event, with the reasons; never the payload itself, only its SHA-256 "
        "and size.",
        "元のレコードのキー（HTTP では無し）/ the refused record's key (none for HTTP)",
    ),
    "contact.events": (
        "接続イベント / Contact events",
        "着信・分野選択・応答・放棄・終話。contact_id をキーとする正規イベント。"
        " / Canonical contact events: received, field selected, answered, abandoned, ended.",
        "contact_id",
    ),
    "routing.decisions": (
        "振り分け判断 / Routing decisions",
        "routing サービスによる割当・待ち行列・あふれ。 / Assignments, queueing and overflow decided "
        "by the routing service.",
        "contact_id",
    ),
    "consultation.events": (
        "相談イベント / Consultation events",
        "相談記録とつなぎ依頼（本人を特定する自由記述は含まない）。 / Consultation records and "
        "referral requests (codes only, no free text).",
        "contact_id",
    ),
    "referral.events": (
        "つなぎイベント / Referral events",
        "つなぎの受付から完了・エスカレーションまで。 / The referral lifecycle, from received to "
        "completed or escalated.",
        "referral_id",
    ),
}

_SENDERS = {
    INGRESS_TOPIC: "partner systems",
    REJECTED_TOPIC: "intake",
    "contact.events": "intake",
    "consultation.events": "intake",
    "routing.decisions": "routing",
    "referral.events": "referral",
}


def _camel(dotted: str) -> str:
    parts = dotted.replace("_", ".").split(".")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def has_ingress_form(event_type: EventType) -> bool:
    """Partners send this type: it has an ingress schema (open envelope; for contact.received, other data)."""
    return event_type.producer == "partner"


def schema_file(event_type: EventType, form: str = "canonical") -> str:
    suffix = ".ingress" if form == "ingress" and has_ingress_form(event_type) else ""
    return f"{event_type.type}{suffix}.json"


def _model_schema(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = schema.pop("$defs", {})
    return schema, defs


def event_schema(event_type: EventType, form: str = "canonical") -> dict[str, Any]:
    """The JSON Schema of one whole event: the envelope with this type's data.

    The canonical form is what tsunagu publishes on its topics: a closed envelope. The ingress form is what
    a partner sends to intake: the envelope also takes extension attributes (intake drops them) and its
    source must be the partner's own, /partners/<org>/<system>."""
    envelope, defs = _model_schema(CloudEvent)
    data_model = event_type.model_for(form)  # type: ignore[arg-type]
    data_schema, data_defs = _model_schema(data_model)
    defs.update(data_defs)
    defs[data_model.__name__] = data_schema
    envelope["properties"]["type"] = {
        "const": event_type.type,
        "description": envelope["properties"]["type"]["description"],
        "type": "string",
    }
    envelope["properties"]["subject"]["description"] = (
        f"data.{event_type.key_field} と同じ値 / must equal data.{event_type.key_field}"
    )
    envelope["properties"]["data"] = {"$ref": f"#/$defs/{data_model.__name__}"}
    ingress = schema_file(event_type, form).endswith(".ingress.json")
    form_note = " (ingress form, as partners send it)" if ingress else ""
    envelope.update(
        {
            "$schema": JSON_SCHEMA_DIALECT,
            "$defs": defs,
            "title": f"{event_type.type}{form_note}",
            "description": f"{event_type.label_ja} / {event_type.label_en}. CloudEvents 1.0 structured "
            f"event; Kafka topic {TOPIC_PREFIX}{event_type.topic}, key data.{event_type.key_field}.",
            "x-tsunagu": {
                "short": event_type.short,
                "topic": TOPIC_PREFIX + event_type.topic,
                "key_field": event_type.key_field,
                "producer": event_type.producer,
                "label": {"ja": event_type.label_ja, "en": event_type.label_en},
            },
        }
    )
    if ingress:
        open_to_extensions(envelope, ATTRIBUTE_NAME_PATTERN)
        partner_source(envelope)
    return envelope


def rejected_schema() -> dict[str, Any]:
    schema = RejectedRecord.model_json_schema(ref_template="#/$defs/{model}")
    schema["$schema"] = JSON_SCHEMA_DIALECT
    return schema


def _message(name: str, title: str, summary: str, key: str, payload_file: str, content_type: str) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "type": "object",
        "properties": {"content-type": {"type": "string", "const": content_type}},
        "required": ["content-type"],
    }
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": content_type.split(";")[0],
        "headers": headers,
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": f"Kafka key: {key}"},
                "bindingVersion": "0.5.0",
            }
        },
        "payload": {
            "schemaFormat": SCHEMA_FORMAT,
            "schema": {"$ref": f"./{JSONSCHEMA_DIR}/{payload_file}"},
        },
    }


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document: one channel per topic and the messages that flow on it."""
    messages: dict[str, Any] = {}
    by_topic: dict[str, list[str]] = {INGRESS_TOPIC: [], REJECTED_TOPIC: []}
    for t in EVENT_TYPES.values():
        key = (
            "partitionkey 属性、なければ data."
            + t.key_field
            + f" / the partitionkey attribute, else data.{t.key_field}"
        )
        title = f"{t.label_ja} / {t.label_en}"
        name = _camel(t.short)
        messages[name] = _message(
            t.type, title, f"{t.type} (producer: {t.producer})", key, schema_file(t), CONTENT_TYPE
        )
        by_topic.setdefault(t.topic, []).append(name)
        if has_ingress_form(t):
            ingress_name = name + "Ingress"
            before = ", before pseudonymisation" if t.ingress_model is not t.data_model else ""
            messages[ingress_name] = _message(
                t.type,
                f"{title}（パートナー送信形 / ingress form）",
                f"{t.type} as partners send it{before}; extension attributes allowed, intake drops them",
                key,
                schema_file(t, "ingress"),
                CONTENT_TYPE,
            )
            by_topic[INGRESS_TOPIC].append(ingress_name)
    messages["rejectedRecord"] = _message(
        "tsunagu.intake.rejected",
        "却下記録 / rejected record",
        "Why intake refused an event; never the payload.",
        _TOPIC_TEXT[REJECTED_TOPIC][2],
        REJECTED_SCHEMA_FILE,
        "application/json",
    )
    by_topic[REJECTED_TOPIC].append("rejectedRecord")

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic in (INGRESS_TOPIC, *TOPICS, REJECTED_TOPIC):
        channel_id = _camel(topic)
        title, description, key = _TOPIC_TEXT[topic]
        channels[channel_id] = {
            "address": TOPIC_PREFIX + topic,
            "title": title,
            "description": description + f" Key: {key}.",
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in by_topic[topic]},
            "bindings": {"kafka": {"topic": TOPIC_PREFIX + topic, "bindingVersion": "0.5.0"}},
        }
        operations["send" + channel_id[:1].upper() + channel_id[1:]] = {
            "action": "send",
            "title": f"{_SENDERS[topic]} → {TOPIC_PREFIX}{topic}",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in by_topic[topic]],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "tsunagu（つなぐ）イベント契約 / tsunagu event contract",
            "version": "1.0.0",
            "description": (
                "全国の相談窓口をつなぐイベント基盤の契約。すべてのイベントは CloudEvents 1.0 の"
                "構造化モード（値に JSON のイベント全体、ヘッダ content-type のみ）で送られる。\n\n"
                "The contract of tsunagu, the event backbone of a nationwide consultation network. "
                "Every event is a CloudEvents 1.0 event in structured content mode: the Kafka record "
                f"value is the whole event as UTF-8 JSON, header content-type: {CONTENT_TYPE}, key = "
                "the partitionkey attribute if present, else the subject (contact_id or referral_id). "
                "No raw phone number, name or free text travels past intake."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _json_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def render() -> dict[str, str]:
    """Every generated file, path relative to the package → its exact text."""
    files: dict[str, str] = {}
    for t in EVENT_TYPES.values():
        files[f"{JSONSCHEMA_DIR}/{schema_file(t)}"] = _json_text(event_schema(t))
        if has_ingress_form(t):
            files[f"{JSONSCHEMA_DIR}/{schema_file(t, 'ingress')}"] = _json_text(event_schema(t, "ingress"))
    files[f"{JSONSCHEMA_DIR}/{REJECTED_SCHEMA_FILE}"] = _json_text(rejected_schema())
    doc = copy.deepcopy(asyncapi())
    files[ASYNCAPI_FILE] = yaml.dump(
        doc, Dumper=_NoAliasDumper, allow_unicode=True, sort_keys=False, width=100, default_flow_style=False
    )
    return files


def stale_files(root: Path = ROOT) -> list[str]:
    """Generated files that are missing, differ, or are left over — empty when all is up to date."""
    expected = render()
    stale = [rel for rel, text in expected.items() if _read(root / rel) != text]
    leftovers = [
        f"{JSONSCHEMA_DIR}/{p.name}"
        for p in sorted((root / JSONSCHEMA_DIR).glob("*.json"))
        if f"{JSONSCHEMA_DIR}/{p.name}" not in expected
    ]
    return sorted(stale + leftovers)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write(root: Path = ROOT) -> list[str]:
    """Write every generated file, remove left-over schemas; returns what changed."""
    changed = stale_files(root)
    expected = render()
    (root / JSONSCHEMA_DIR).mkdir(parents=True, exist_ok=True)
    for rel in changed:
        if rel in expected:
            (root / rel).write_text(expected[rel], encoding="utf-8")
        else:
            (root / rel).unlink()
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if generated files are out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale generated files (run: python -m schemas.generate):", file=sys.stderr)
            for rel in stale:
                print(f"  schemas/{rel}", file=sys.stderr)
            return 1
        print("schemas: generated documents are up to date")
        return 0
    changed = write()
    for rel in changed:
        print(f"wrote schemas/{rel}")
    if not changed:
        print("schemas: nothing to do")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
