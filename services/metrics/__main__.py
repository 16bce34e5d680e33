"""``python -m services.metrics``: metrics as its own process (tsunagu/serve.py)."""

from services.metrics.app import SPEC
from tsunagu import serve

serve.main(SPEC, "services.metrics.app:build_app")
