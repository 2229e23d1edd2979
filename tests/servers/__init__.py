"""Real servers (SeaweedFS S3, ...) that the test suite starts itself, on 127.0.0.1 only."""
