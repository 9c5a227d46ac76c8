"""The vocabulary processes speak: every message and endpoint, declared once for both ends.

common (messages, endpoints, health), engine, store (memory and, as they come, the other
tables), services (which processes exist and what each depends on). Nothing here imports
domain code or the transport; appliance/ipc carries these messages, it does not define them.
"""
