"""Metrics, numpy only: segmentation (mIoU), fusion quality (EN … PSNR) and run-to-run agreement."""
from mrfs_edge.metrics.agreement import AgreementScore, fused_psnr, fused_ssim, max_abs_diff, pixel_agreement
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
from mrfs_edge.metrics.segmentation import SegmentationScore, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy

__all__ = [
    "AgreementScore", "fused_psnr", "fused_ssim", "max_abs_diff", "pixel_agreement",
    "average_gradient", "entropy", "fusion_metrics", "fusion_mi", "fusion_psnr", "fusion_ssim",
    "fusion_vif", "mutual_information", "psnr", "psnr_from_mse", "qabf", "scd", "spatial_frequency",
    "ssim", "standard_deviation", "to_grey", "vifp",
    "SegmentationScore", "confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy",
]
