"""`make k8s-validate`: render deploy/k8s's overlays with kustomize and check them against the code.

    python deploy/validate.py                 # check both overlays, the Dockerfile and the dashboard
    python deploy/validate.py --print prod    # print the rendered overlay (what kustomize renders)

The overlays are rendered by kustomize itself (`kustomize build`, or kubectl's built-in
`kubectl kustomize`); no cluster is needed. Then (deploy/checks/, one module per purpose):

- every object against its schema, unknown fields rejected: built-in kinds against Kubernetes
  ``K8S_VERSION`` (kubernetes-validate), custom resources against their operators' CRDs, vendored
  in deploy/crds/;
- against the code: the services' specs (tsunagu.service.ServiceSpec in services/<name>/app.py):
  one Deployment each, its port and probes, a ScaledObject on its consumer group and exactly its
  consumed topics; the topics of tsunagu.topics; the settings each pod starts with;
- between manifests: images, Services, PDBs, ScaledObjects, Secrets, Kafka, PostgreSQL, the
  collector and the NetworkPolicies;
- the Dockerfile's static facts and the Grafana dashboard's metric names (deploy/README.md).

Exits 1 with the list of problems, 0 when there are none.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.checks import files, network, platform, schemas, workloads  # noqa: E402
from deploy.checks.code import CodeFacts, code_facts  # noqa: E402
from deploy.checks.render import OVERLAYS, Rendered, RenderError, kustomization, overlay_image, render  # noqa: E402


def check_overlay(overlay: str, objects: list[dict[str, Any]] | None = None,
                  facts: CodeFacts | None = None) -> list[str]:
    """Every problem of one overlay (rendered by kustomize unless ``objects`` is given), each prefixed."""
    facts = facts or code_facts()
    try:
        objects = render(overlay) if objects is None else objects
    except RenderError as err:
        return [f"{overlay}: cannot render: {err}"]
    r = Rendered(overlay, objects, overlay_image(overlay), kustomization(overlay).get("namespace"))
    problems = list(facts.problems)
    checks: list[tuple[str, Callable[[], list[str]]]] = [
        ("objects", lambda: workloads.check_generic(r)),
        ("schemas", lambda: schemas.check_schemas(r)),
        ("services", lambda: workloads.check_services(r, facts)),
        ("kafka", lambda: platform.check_kafka(r, facts)),
        ("postgres", lambda: platform.check_postgres(r)),
        ("collector", lambda: platform.check_collector(r)),
        ("network", lambda: network.check_network(r, facts)),
    ]
    for name, check in checks:
        try:
            problems += check()
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            # an object the schemas refuse may lack what a later check reads: the schema problem says why
            problems.append(f"{name}: not checked ({type(err).__name__}: {err}); see the schema problems")
    return [f"{overlay}: {p}" for p in dict.fromkeys(problems)]


def check_all(overlays: Iterable[str] = OVERLAYS) -> list[str]:
    facts = code_facts()
    problems: list[str] = []
    for overlay in overlays:
        problems += check_overlay(overlay, facts=facts)
    problems += files.committed_secrets()
    problems += files.check_dockerfile()
    problems += files.check_dashboard()
    return list(dict.fromkeys(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", dest="show", choices=OVERLAYS, help="print the rendered overlay and exit")
    args = parser.parse_args(argv)
    try:
        if args.show:
            print(yaml.safe_dump_all(render(args.show), sort_keys=False), end="")
            return 0
        for overlay in OVERLAYS:
            kinds: dict[str, int] = {}
            for obj in render(overlay):
                kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
            print(f"{overlay}: {sum(kinds.values())} resources ({', '.join(f'{n} {k}' for k, n in kinds.items())})")
    except RenderError as err:
        print(f"cannot render: {err}", file=sys.stderr)
        return 1
    problems = check_all()
    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"ok: schemas (Kubernetes {schemas.K8S_VERSION}, operators' CRDs), services' specs, cross-references, "
          "Dockerfile, dashboard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
