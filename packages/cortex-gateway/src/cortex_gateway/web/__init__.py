"""The live status page (``GET /ui``): its buffers of recent requests and events, its routes."""
