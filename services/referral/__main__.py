"""``python -m services.referral``: referral as its own process (tsunagu/serve.py)."""

from services.referral.app import SPEC
from tsunagu import serve

serve.main(SPEC, "services.referral.app:build_app")
