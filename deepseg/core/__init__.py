"""The numerical core of Deep Segmentation: numpy, scipy and torch only, never Spark."""
