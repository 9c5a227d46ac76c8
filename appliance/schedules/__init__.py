"""Schedules in the reference form: the model and its file (model.py), triggers and their fire
times (triggers.py). Shared by the agent, which runs them, and the command layer, which lists and
edits them; it imports no service package."""
