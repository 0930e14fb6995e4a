"""The command line: `mmlab` and its sub-commands (most commands still live beside their
stage and are loaded lazily from here).
"""
