"""Documents the hub generates about itself: the AsyncAPI document of its Kafka channels."""
