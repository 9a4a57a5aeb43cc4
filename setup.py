"""mrfs-edge: deploy MRFS infrared/visible fusion + segmentation networks with TensorRT.

Core install (numpy, OpenCV, ONNX Runtime) is torch-free: it runs exported models. Extras:
``export`` (PyTorch, ONNX tooling, quantisation) for export/calibration/training/benchmarks,
``trt`` (TensorRT bindings from PyPI, cuda-python; on Jetson use JetPack's TensorRT instead),
``dev`` (tests and type checks).
"""
from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="mrfs-edge",
    version="0.1.0",
    description="Deploy MRFS (CVPR 2024) infrared/visible fusion and segmentation on Jetson/TensorRT",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mrfs_edge", "mrfs_edge.*"]),
    package_data={"mrfs_edge": ["assets/*.pth", "assets/*.md", "assets/samples/*.md",
                                "assets/samples/*/*.png", "assets/samples/*.txt"]},
    python_requires=">=3.9",
    install_requires=[
        "numpy>=1.23",
        "opencv-python-headless>=4.8",
        "onnxruntime>=1.16",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require={
        # torch is pinned by range so an installed CPU build satisfies it (no CUDA download).
        "export": [
            "torch>=2.1",
            "onnx>=1.15",
            "onnxslim>=0.1.30",
            "onnxconverter-common>=1.14",
            "matplotlib>=3.7",
        ],
        "quant": ["nvidia-modelopt[onnx]>=0.19"],
        # On Jetson, TensorRT ships with JetPack (python3-libnvinfer): do not install this extra there.
        "trt": ["tensorrt>=8.6", "cuda-python>=12", "polygraphy>=0.49"],
        "pycuda": ["pycuda>=2022.1"],
        "dev": ["pytest>=7", "pytest-timeout>=2"],
    },
)
