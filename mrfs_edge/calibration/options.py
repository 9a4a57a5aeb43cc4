"""Calibration settings the command lines parse, free of onnx so the target CLI can import them."""
from __future__ import annotations

from dataclasses import dataclass

CALIBRATION_METHODS = ("entropy", "max", "percentile")


@dataclass
class Budget:
    """Accuracy floors against the FP32 model, and the INT8 share that must remain."""

    min_agreement: float = 0.99
    min_psnr: float = 35.0
    min_int8_mac_fraction: float = 0.5
    # Fraction of the allowed agreement loss kept in reserve on the calibration pairs: on the demo
    # model they overstated held-out agreement by up to 0.8 points (99.45 % vs 98.62 %).
    agreement_margin: float = 0.6
    psnr_margin: float = 1.0        # dB kept in reserve on calibration pairs

    def damage(self, agreement: float, psnr: float) -> float:
        """Share of the budget used: argmax loss over allowed loss plus MSE over allowed MSE."""
        return (1.0 - agreement) / (1.0 - self.min_agreement) + 10.0 ** ((self.min_psnr - min(psnr, 200.0)) / 10.0)

    def met(self, agreement: float, psnr: float, margin: bool = False) -> bool:
        agree_floor = self.min_agreement + (self.agreement_margin * (1.0 - self.min_agreement) if margin else 0.0)
        return agreement >= agree_floor and psnr >= self.min_psnr + (self.psnr_margin if margin else 0.0)
