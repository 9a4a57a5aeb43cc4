"""Metrics: segmentation (mIoU), fusion quality (EN … PSNR) and run-to-run agreement.

NumPy, and OpenCV for the fusion metrics' filters: both are in the torch-free core install.
"""
from mrfs_edge.metrics.agreement import (
                     AgreementScore,
                     fused_psnr,
                     fused_ssim,
                     max_abs_diff,
                     pixel_agreement,
)
from mrfs_edge.metrics.fusion import (
                     average_gradient,
                     entropy,
                     fusion_metrics,
                     fusion_mi,
                     fusion_psnr,
                     fusion_ssim,
                     fusion_vif,
                     mutual_information,
                     psnr,
                     psnr_from_mse,
                     qabf,
                     scd,
                     spatial_frequency,
                     ssim,
                     standard_deviation,
                     to_grey,
                     vifp,
)
from mrfs_edge.metrics.segmentation import (
                     SegmentationScore,
                     confusion_matrix,
                     iou_per_class,
                     mean_iou,
                     pixel_accuracy,
)

__all__ = [
                     "AgreementScore",
                     "SegmentationScore",
                     "average_gradient",
                     "confusion_matrix",
                     "entropy",
                     "fused_psnr",
                     "fused_ssim",
                     "fusion_metrics",
                     "fusion_mi",
                     "fusion_psnr",
                     "fusion_ssim",
                     "fusion_vif",
                     "iou_per_class",
                     "max_abs_diff",
                     "mean_iou",
                     "mutual_information",
                     "pixel_accuracy",
                     "pixel_agreement",
                     "psnr",
                     "psnr_from_mse",
                     "qabf",
                     "scd",
                     "spatial_frequency",
                     "ssim",
                     "standard_deviation",
                     "to_grey",
                     "vifp",
]
