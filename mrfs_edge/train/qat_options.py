"""QAT choices shared by the command line (torch-free, so ``--help`` loads no PyTorch) and the trainer."""
from __future__ import annotations

from typing import Literal, get_args

CalibMethod = Literal["max", "percentile"]
CALIB_METHODS: tuple[CalibMethod, ...] = get_args(CalibMethod)
# The percentile calibration keeps this share of |x| inside the range (the rest saturates).
PERCENTILE = 99.99
