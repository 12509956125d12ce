"""The runtime: the supervisor (``khronos run``), the worker and its shutdown."""
