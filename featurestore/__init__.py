"""Feature views and the online store (Redis, or in-memory for the embedded default).

Import the submodules directly; nothing here imports redis (open_online_store does, for redis:// URLs).
"""
