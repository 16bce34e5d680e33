"""Every rendered object against its schema, unknown fields rejected:

- built-in kinds against Kubernetes ``K8S_VERSION``'s OpenAPI schema (kubernetes-validate, strict);
- custom resources against the openAPIV3Schema of the operator's own CRD, vendored in deploy/crds/
  (deploy/README.md names each file's upstream source and version). As the API server would for a
  structural schema, a field the CRD does not declare is an error unless the CRD preserves unknown
  fields there (``x-kubernetes-preserve-unknown-fields``: Strimzi's `config` maps, the collector's
  `config`).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

from .render import ROOT, Rendered, is_builtin, ref

K8S_VERSION = "1.33"  # the oldest Kubernetes the manifests target (KEDA, Strimzi and CNPG support it)
CRD_DIR = ROOT / "deploy" / "crds"


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object that declares its properties
    and does not preserve unknown fields (a structural schema's pruning, made an error)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validators(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], tuple[Any, str]]:
    """(apiVersion, kind) -> (a validator of the CRD's schema, where the CRD comes from)."""
    from jsonschema import Draft7Validator

    validators = {}
    for path in sorted(crd_dir.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        schema = strict(copy.deepcopy(doc["openAPIV3Schema"]))
        # metadata is the API server's (ObjectMeta), not the CRD's: the CRD only says it is an object
        schema.setdefault("properties", {})["metadata"] = {"type": "object"}
        validators[(f"{doc['group']}/{doc['version']}", doc["kind"])] = (Draft7Validator(schema), doc["source"])
    return validators


def custom_problems(obj: dict[str, Any], crd_dir: Path = CRD_DIR) -> list[str]:
    got = crd_validators(crd_dir).get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if got is None:
        return [f"{ref(obj)}: no CRD schema for {obj.get('apiVersion')} {obj.get('kind')} in deploy/crds/"]
    validator, _ = got
    problems = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(p) for p in err.absolute_path) or "(top)"
        problems.append(f"{ref(obj)}: schema (CRD {obj.get('apiVersion')} {obj.get('kind')}): {where}: {err.message}")
    return problems


_BUILTIN_RESULTS: dict[str, str | None] = {}  # an object's JSON -> its schema problem (kubernetes-validate is slow)


def builtin_problem(obj: dict[str, Any]) -> str | None:
    import kubernetes_validate

    key = json.dumps(obj, sort_keys=True, default=str)
    if key not in _BUILTIN_RESULTS:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            _BUILTIN_RESULTS[key] = None
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.absolute_path) or "(top)"
            _BUILTIN_RESULTS[key] = f"schema (Kubernetes {K8S_VERSION}): {where}: {err.message}"
        except kubernetes_validate.SchemaNotFoundError as err:
            _BUILTIN_RESULTS[key] = err.message
    return _BUILTIN_RESULTS[key]


def check_schemas(r: Rendered) -> list[str]:
    problems = []
    for obj in r.objects:
        if is_builtin(obj):
            problem = builtin_problem(obj)
            if problem:
                problems.append(f"{ref(obj)}: {problem}")
        else:
            problems += custom_problems(obj)
    return problems
