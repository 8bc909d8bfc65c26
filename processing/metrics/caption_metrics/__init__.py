"""The `caption_metrics` evaluate module (load it with `evaluate.load(processing.metrics.metric_path("caption_metrics"))`)."""
