"""mrfs-edge: deploy MRFS infrared/visible fusion + segmentation networks with TensorRT.

Core install (numpy, OpenCV, ONNX Runtime) is torch-free: it runs exported models. Extras:
``export`` (PyTorch, ONNX tooling, quantisation) for export/calibration/training/benchmarks,
``trt`` (TensorRT bindings and the CUDA runtime from PyPI; on Jetson use JetPack's TensorRT instead),
``opencv`` (pip's OpenCV, for aarch64 machines without a system one), ``bag`` (ROS 2 bags and MCAP
files: ``bag://`` sources and outputs), ``dev`` (tests and type checks, with ``bag``).

Jetson: JetPack's OpenCV is built with GStreamer (``csi://``, ``gst://``); pip's wheels are not. The
OpenCV requirement is therefore skipped on aarch64 so ``pip install .`` in a venv made with
``--system-site-packages`` keeps the system cv2 (and TensorRT bindings) in charge. NumPy stays
below 1.24 on Python 3.8 (JetPack 5): TensorRT 8.5.2's bindings use ``np.bool``, removed in 1.24.

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
    python_requires=">=3.8",
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.8",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Operating System :: POSIX :: Linux",
    ],
    install_requires=[
        # JetPack 5 (Python 3.8, system NumPy 1.17.4): pip installs 1.21-1.23 into the venv, which
        # TensorRT 8.5.2 and the system cv2 (built against 1.17) both accept; JetPack 6's 1.21.5 satisfies it.
        'numpy>=1.21,<1.24; python_version < "3.9"',
        'numpy>=1.21; python_version >= "3.9"',
        # Not on aarch64 (Jetson): the wheel would shadow JetPack's GStreamer-enabled OpenCV. Use the
        # `opencv` extra on an aarch64 machine that has no system OpenCV.
        'opencv-python-headless>=4.5; platform_machine != "aarch64"',
        # 1.16 to 1.19 are the last releases with Python 3.8 wheels; newer ones for 3.9+.
        "onnxruntime>=1.16",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    # The same commands as the scripts beside the package (export/, runtime/, calibration/, benchmarks/),
    # on PATH after `pip install`; each is the CLI base's entry (-q/-v, one-line errors, exit statuses).
    entry_points={
        "console_scripts": [
            "mrfs-export-onnx = mrfs_edge.tools.export_onnx:entry",
            "mrfs-build-engine = mrfs_edge.tools.build_engine:entry",
            "mrfs-calibrate = mrfs_edge.tools.calibrate:entry",
            "mrfs-run = mrfs_edge.tools.run:run_main",
            "mrfs-register = mrfs_edge.tools.run:register_main",
            "mrfs-benchmark = mrfs_edge.tools.benchmark:entry",
            "mrfs-runtime-fps = mrfs_edge.tools.run:fps_main",
            "mrfs-train = mrfs_edge.train.__main__:main",
            "mrfs-model-card = mrfs_edge.tools.model_card:entry",
            "mrfs-soak = mrfs_edge.tools.run:soak_main",
            "mrfs-gmacs = mrfs_edge.tools.gmacs:entry",
            "mrfs-calibration-memory = mrfs_edge.tools.calibration_memory:entry",
        ],
    },
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
        # On Jetson, TensorRT and libcudart ship with JetPack (python3-libnvinfer): do not install this extra there.
        "trt": ["tensorrt>=8.6", "nvidia-cuda-runtime-cu12>=12", "polygraphy>=0.49"],
        "opencv": ["opencv-python-headless>=4.5"],
        # ROS 2 bags and MCAP files (bag:// sources and outputs, mrfs_edge.io.bag). MCAP is read and written by
        # mcap + mcap-ros2-support on every Python; rosbags (.db3 bag folders, ROS 1 .bag) 0.10+ needs Python
        # 3.10, so Python 3.8 (JetPack 5) gets 0.9.23, its last release for 3.8, with the same reader API.
        # Listed again in `dev` (setup's keywords stay literals: tests/test_py38_packaging.py reads them).
        "bag": ["mcap>=1.6", "mcap-ros2-support>=0.6", 'rosbags>=0.11.9; python_version >= "3.10"',
                'rosbags>=0.9.23,<0.10; python_version < "3.10"'],
        # The CUDA runtime wheel: tests load the real libcudart (cuda_memory) on GPU-less machines too.
        "dev": ["pytest>=7", "pytest-timeout>=2", "packaging>=20", "nvidia-cuda-runtime-cu12>=12", "import-linter>=2.1", "scikit-image>=0.19",
                "mcap>=1.6", "mcap-ros2-support>=0.6", 'rosbags>=0.11.9; python_version >= "3.10"',
                'rosbags>=0.9.23,<0.10; python_version < "3.10"'],
    },
)
