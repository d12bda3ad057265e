"""Serving: thresholds, the graph-mode and TFLite early-exit engines, export and its check."""
