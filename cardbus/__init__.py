"""CardBus: a multi-smart-card payment system on Apache Kafka."""

__version__ = "0.1.0"
