"""The bottom layer: errors, atomic files, the model contract and reading it from an ONNX file.

Everything above may import from here; nothing here imports another ``mrfs_edge`` package, and
nothing here needs more than the standard library and NumPy, so every command on every target
starts from it.
"""
