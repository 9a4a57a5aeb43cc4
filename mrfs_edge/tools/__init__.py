"""The top layer: the command lines (``mrfs-build-engine``, ``mrfs-run``, ...) and the embedded
defaults they fall back to (bundled demo checkpoint and sample pairs).

Each module's ``main(argv)`` parses arguments, validates them, and calls one workflow below.
"""
