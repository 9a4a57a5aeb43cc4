"""Thermal automatic gain control: 16-bit radiometric frames to the 8-bit grey MRFS was trained on.

8-bit frames (already gain-controlled by the camera, or read from a dataset) pass through
untouched, so the bundled samples and MFNet-style data reach the network exactly as in
evaluation. 16-bit frames get a percentile stretch; the stretch limits are smoothed over time
(an exponential moving average) so a hot object entering the view does not make the whole
scene flicker in brightness from one frame to the next.
"""
from __future__ import annotations

import numpy as np


class ThermalAGC:
    """Percentile stretch of 16-bit frames with temporally smoothed limits, output uint8.

    ``low_percentile``/``high_percentile`` map to 0 and 255; ``smoothing`` is the weight of the
    previous limits in the moving average (0: every frame stretched on its own).
    """

    def __init__(self, low_percentile: float = 1.0, high_percentile: float = 99.0, smoothing: float = 0.9) -> None:
        if not 0.0 <= low_percentile < high_percentile <= 100.0:
            raise ValueError(f"thermal percentiles must satisfy 0 ≤ low < high ≤ 100, got {low_percentile}, {high_percentile}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"thermal smoothing must be in [0, 1), got {smoothing}")
        self.low_percentile, self.high_percentile, self.smoothing = low_percentile, high_percentile, smoothing
        self.limits: tuple[float, float] | None = None

    def reset(self) -> None:
        """Forget the smoothed limits (e.g. after the camera reconnects)."""
        self.limits = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if frame.dtype == np.uint8:
            return frame
        if frame.dtype != np.uint16:
            raise ValueError(f"thermal frames must be uint8 or uint16, got {frame.dtype}")
        low, high = (float(v) for v in np.percentile(frame, (self.low_percentile, self.high_percentile)))
        if self.limits is not None:
            a = self.smoothing
            low, high = a * self.limits[0] + (1 - a) * low, a * self.limits[1] + (1 - a) * high
        self.limits = (low, high)
        scale = 255.0 / max(high - low, 1.0)
        stretched = (frame.astype(np.float32) - np.float32(low)) * np.float32(scale)
        return np.clip(np.rint(stretched), 0, 255).astype(np.uint8)
