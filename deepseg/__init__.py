"""deepseg: semi-supervised user segmentation by Deep Segmentation (deep low-density separation)."""

from deepseg.classifier import PATENT_PARAMS, DeepSegmentationClassifier
from deepseg.core.ovr import TransductiveSVC

__all__ = ["DeepSegmentationClassifier", "TransductiveSVC", "PATENT_PARAMS"]
__version__ = "0.1.0"
