"""What the tests share: process handling, a running server, shrunken settings, damaged model folders.

Test modules import from here, never from each other or from a conftest.py.
"""
