"""INT8 calibration: calibration sets, explicit Q/DQ (ModelOpt / ONNX Runtime), sensitivity and
mixed precision, and TensorRT 8.x implicit calibrators."""
from mrfs_edge.calibration.dataset import CalibrationSet, select_pairs

__all__ = ["CalibrationSet", "select_pairs"]
