"""The checks behind `make k8s-validate` (deploy/validate.py), one module per purpose:

- render: the overlays rendered by kustomize itself, and helpers to read what it renders;
- schemas: every object against its schema (Kubernetes' for built-in kinds, the operators' CRDs
  vendored in deploy/crds/ for custom resources), unknown fields rejected;
- code: what the code declares (the services' specs, topics, settings, health paths);
- workloads: Deployments, pods, Services, PDBs and ScaledObjects against the specs;
- platform: Kafka, its topics, PostgreSQL and the collector against the code and the services;
- network: NetworkPolicies;
- files: the Dockerfile, the dashboard, and no Secret committed anywhere under deploy/.
"""
