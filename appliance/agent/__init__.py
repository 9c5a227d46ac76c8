"""The agent process: the scheduler and the perceive -> decide -> act loop."""
