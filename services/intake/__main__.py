"""``python -m services.intake``: intake as its own process (tsunagu/serve.py)."""

from services.intake.app import SPEC
from tsunagu import serve

serve.main(SPEC, "services.intake.app:build_app")
