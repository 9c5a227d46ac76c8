"""The api process: the control plane (REST + WebSocket) and the web admin page."""
