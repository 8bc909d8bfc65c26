"""The `vqa_accuracy` evaluate module (load it with `evaluate.load(processing.metrics.metric_path("vqa_accuracy"))`)."""
