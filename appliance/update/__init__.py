"""Updates: the signed bundle (bundle.py) and the A/B root slots it is installed into (slots.py)."""
