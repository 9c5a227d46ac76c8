"""The agent's loop: perceive, decide, act, sized for a small model on two cores.

1. Tools (tools.py): at most MAX_TOOLS of the commands the caller may call (their tool faces, from
   the capabilities), chosen for the goal by its words, deterministically.
2. Plan (planner.py): one model call whose reply a grammar forces into a list of at most MAX_STEPS
   calls of the offered tools, each optionally guarded by a condition on an earlier step's value.
   The planner reads only trusted text: the goal (a person's words), the tools, the time. Device
   payloads, entity names and states, memories and files never reach it.
3. Execute (executor.py): the steps run in order, deterministically, through the command table as
   the task's creator; a condition compares a value read from an earlier step (a number, or a short
   pattern-checked word: typed extraction, never free text) with the value the plan fixed.
   Calls fixed in the plan before anything untrusted was read may act; a re-plan made after an
   untrusted read is tainted, and its actuate or external calls wait for a person's approval of the
   exact call (the dispatcher's provenance rule).
4. At most one re-plan, when a step failed; then the answer (answer.py): a model call that reads the
   results, untrusted ones included, and writes for the person, in the goal's language. It can act on
   nothing: it is offered no tool.

Limits, on by default: MAX_STEPS executed steps, the same call twice ends the run, a token budget,
the task's wall time, a timeout per tool. run.py puts it together; taskkinds/agent.py is the kind.
"""
