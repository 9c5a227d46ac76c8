"""The developer's supervisor: `appliance run` (systemd's job on a real box)."""
