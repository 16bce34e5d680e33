"""The overlays as `kustomize build` renders them, and helpers to read the rendered objects.

The renderer is kustomize itself: ``$KUSTOMIZE`` (a kustomize or kubectl binary), else ``kustomize``
on PATH, else ``kubectl kustomize`` (kubectl has kustomize built in). No stand-in: a difference from
what a cluster would be given is exactly what these checks must not have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
IMAGE = "tsunagu"  # the image name in the base that each overlay's `images:` replaces
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "StorageClass"}


class RenderError(Exception):
    """kustomize is missing, or refused the kustomization."""


def kustomize_command() -> list[str] | None:
    given = os.environ.get("KUSTOMIZE")
    if given:
        return [given, "build"] if Path(given).name.startswith("kustomize") else [given, "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def render(overlay: str) -> list[dict[str, Any]]:
    """The overlay's objects, as `kustomize build deploy/k8s/overlays/<overlay>` prints them."""
    command = kustomize_command()
    if command is None:
        raise RenderError("neither kustomize nor kubectl is installed (or set KUSTOMIZE=/path/to/either)")
    done = subprocess.run([*command, str(K8S_DIR / "overlays" / overlay)], capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RenderError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def kustomization(overlay: str) -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "overlays" / overlay / "kustomization.yaml").read_text(encoding="utf-8")) or {}


def overlay_image(overlay: str) -> str | None:
    """What an overlay's `images:` makes of IMAGE, e.g. registry/tsunagu:0.1.0."""
    for entry in kustomization(overlay).get("images", []):
        if entry.get("name") == IMAGE:
            rest = f"@{entry['digest']}" if "digest" in entry else f":{entry['newTag']}" if "newTag" in entry else ""
            return f"{entry.get('newName', IMAGE)}{rest}"
    return None


def split_image(image: str) -> tuple[str, str]:
    """(name, the rest: ':tag', '@digest' or '')."""
    at = image.find("@")
    if at >= 0:
        return image[:at], image[at:]
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon:]
    return image, ""


def containers_of(obj: Any) -> Iterator[dict[str, Any]]:
    """Every container (and init container) anywhere in an object."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from containers_of(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from containers_of(item)


def is_builtin(obj: dict[str, Any]) -> bool:
    """A kind of Kubernetes itself (core, apps, policy, networking.k8s.io, ...), not a CRD's."""
    api = str(obj.get("apiVersion", ""))
    group = api.rsplit("/", 1)[0] if "/" in api else ""
    return group == "" or "." not in group or group.endswith(".k8s.io")


def ref(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels only; matchExpressions are not used here) selects these labels."""
    if selector is None:
        return False
    if set(selector) - {"matchLabels"}:
        return False
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


@dataclass
class Rendered:
    overlay: str
    objects: list[dict[str, Any]]
    image: str | None
    namespace: str | None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def named(self, kind: str, name: str | None) -> dict[str, Any] | None:
        return next((o for o in self.of(kind) if o.get("metadata", {}).get("name") == name), None)

    def config(self) -> dict[str, str]:
        """The data of ConfigMap tsunagu-config, the settings every service reads."""
        return (self.named("ConfigMap", "tsunagu-config") or {}).get("data") or {}

    def workers(self) -> int:
        return int(self.config().get("TSUNAGU_WORKERS", "1"))
