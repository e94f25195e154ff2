"""Operations: Prometheus metrics (``metrics``; the fold-in consumer's in ``foldin_metrics``),
structured JSON logs (``logs``), the training job's textfile/Pushgateway output (``jobmetrics``)
and the metrics HTTP endpoint (``endpoint``).
Imports ``recsvc.core`` and prometheus-client / structlog only; every other room may call it.
"""
