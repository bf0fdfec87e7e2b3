"""Helpers shared by the test suite: real servers on real sockets, a real browser."""
