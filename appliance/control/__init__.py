"""The command layer: every operation declared once, behind every surface.

A `Command` names an operation with its request and response models, the permission it needs,
whether it streams, and its handler. The `Dispatcher` validates a request, checks the caller's
role, calls the handler and maps every failure to one error vocabulary (`CommandError`), once.
REST, the WebSocket channel, MQTT command topics, agent tools and the CLI are thin adapters
over the same table (docs/architecture.md).
"""
