"""The tools above the services: the ``tsunagu`` command, the local stack, the demo and the simulator.

They import the services and the kit (``tsunagu/``); nothing imports them, and the production
image leaves them out (with the embedded broker and PostgreSQL of the ``local`` dependency group).
"""
