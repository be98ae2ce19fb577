"""Turning FP32 ONNX networks into a build, without torch: quantized variants (:mod:`.quantize`) as the precision
policy asks (:mod:`.policy`), the fidelity gate (:mod:`.fidelity`) on feeds made through the run path's own
preprocessing (:mod:`.feeds`, :mod:`.demo_material`), the fastest passing variant per network (:mod:`.select`),
the build folder and its manifest (:mod:`.networks`), re-checks on another CPU class (:mod:`.recheck`), and the
first run of a profile that ships every network (:mod:`.shipped`).

Shared by ``edge-build`` (which exports the FP32 networks with PyTorch first) and the run path (a kiosk's first
run, a build opened on another CPU); needs onnx and onnxruntime only.
"""
