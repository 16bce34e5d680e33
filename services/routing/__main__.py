"""``python -m services.routing``: routing as its own process (tsunagu/serve.py)."""

from services.routing.app import SPEC
from tsunagu import serve

serve.main(SPEC, "services.routing.app:build_app")
