"""The whole box's state in one file: `appliance backup` and `appliance restore` (backup/archive.py)."""
