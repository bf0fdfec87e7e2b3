"""The HTTP edge: an ASGI app over the gateway and topics."""
