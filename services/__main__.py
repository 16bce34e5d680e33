"""``python -m services <name>``: run one service (services/run.py)."""

from services.run import main

main()
