"""The HTTP face of the platform: REST API, websocket live progress, dashboard and reports.

One aiohttp process (``python -m gateway``) in front of the orchestrator: it subscribes to the
orchestrator's event stream once (:mod:`gateway.events`) and fans it out to every websocket.
"""
