"""Running a variant on this host, for export, batch and bench alike (and importing none of them):

- ``ort.py``: ONNX Runtime sessions, providers checked (no silent CPU fallback), feeds padded per row.
- ``ov.py``: OpenVINO on the CPU (static int8 and bf16 variants), native-bf16 detection.
- ``engine.py``: :func:`open_engine`, one callable for any variant whatever its runtime.
- ``cpu.py``: CPU facts (model, ISA extensions, physical cores, the cores this process may use).
- ``choose.py``: the default variant of a bundle on this host, measured once per CPU and then kept.
"""
