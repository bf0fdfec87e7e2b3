"""ssegate: Server-Sent Events done right.

Kept minimal on purpose: importing ``ssegate.codec`` runs this module, and the codec must stay
free of asyncio, sockets and HTTP libraries (``tests/codec/test_sans_io.py``).
"""

__version__ = "0.1.0"
