"""Model files on the box: reading and validating GGUF, converting, importing, the demo writer.

Tooling, not serving: the engine reads GGUF metadata from here to plan, and this package asks
the engine (in a child process, `python -m appliance.engine.selfcheck`) whether it can run a file.
"""
