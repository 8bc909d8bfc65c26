"""The `recall_at_k` evaluate module (load it with `evaluate.load(processing.metrics.metric_path("recall_at_k"))`)."""
