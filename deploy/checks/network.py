"""NetworkPolicies: every service restricted both ways; egress only to Kafka, PostgreSQL, the
collector and DNS (and to all four); only intake open beyond the namespace; each service's port
admitted."""

from __future__ import annotations

from typing import Any

from .code import CodeFacts
from .render import Rendered, ref, selects


def _allowed_peer(peer: dict[str, Any], kafka: str, pg: str, collector: str) -> str | None:
    """Which allowed destination an egress peer is: kafka, postgres, collector, dns, or None."""
    if "ipBlock" in peer:
        return None
    labels = (peer.get("podSelector") or {}).get("matchLabels") or {}
    ns = (peer.get("namespaceSelector") or {}).get("matchLabels")
    if "namespaceSelector" in peer:
        if ns == {"kubernetes.io/metadata.name": "kube-system"} and labels.get("k8s-app") == "kube-dns":
            return "dns"
        return None
    if labels.get("strimzi.io/cluster") == kafka:
        return "kafka"
    if labels.get("cnpg.io/cluster") == pg:
        return "postgres"
    if labels.get("app.kubernetes.io/name") == f"{collector}-collector":
        return "collector"
    return None


def check_network(r: Rendered, facts: CodeFacts) -> list[str]:
    problems: list[str] = []
    kafka = next((k["metadata"]["name"] for k in r.of("Kafka")), "")
    pg = next((c["metadata"]["name"] for c in r.of("Cluster")), "")
    col = next((c["metadata"]["name"] for c in r.of("OpenTelemetryCollector")), "")
    policies = r.of("NetworkPolicy")
    for service, spec in facts.specs.items():
        dep = r.named("Deployment", f"tsunagu-{service}")
        if dep is None:
            continue
        labels = dep["spec"]["template"].get("metadata", {}).get("labels") or {}
        mine = [p for p in policies if selects(p["spec"].get("podSelector"), labels)]
        types = {t for p in mine for t in p["spec"].get("policyTypes") or []}
        if not {"Ingress", "Egress"} <= types:
            problems.append(f"{ref(dep)}: NetworkPolicies do not restrict both ingress and egress")
        reached: set[str] = set()
        for p in mine:
            for rule in p["spec"].get("egress") or []:
                peers = rule.get("to")
                if not peers:
                    problems.append(f"{ref(p)}: an egress rule without `to` lets {service} reach anything")
                    continue
                for peer in peers:
                    kind = _allowed_peer(peer, kafka, pg, col)
                    if kind is None:
                        problems.append(f"{ref(p)}: {service} may reach {peer}, which is not Kafka, PostgreSQL, "
                                        "the collector or DNS")
                    else:
                        reached.add(kind)
        for needed in ("kafka", "postgres", "collector", "dns"):
            if needed not in reached:
                problems.append(f"{ref(dep)}: NetworkPolicies do not let {service} reach {needed}")
        port = int(r.config().get(f"TSUNAGU_{spec.port_setting.upper()}", spec.default_port))
        open_ports: set[int] = set()
        for p in mine:
            for rule in p["spec"].get("ingress") or []:
                rule_ports = {int(x.get("port")) for x in rule.get("ports") or [] if str(x.get("port")).isdigit()}
                open_ports |= rule_ports
                peers = rule.get("from")
                wide = not peers or any("ipBlock" in x or x.get("namespaceSelector") == {} for x in peers)
                if wide and service != "intake":
                    problems.append(f"{ref(p)}: {service} is open to everyone; only intake (partners) may be")
                if not rule_ports:
                    problems.append(f"{ref(p)}: an ingress rule without ports opens every port of {service}")
        if port not in open_ports:
            problems.append(f"{ref(dep)}: no NetworkPolicy admits traffic to its port {port}")
    return problems
