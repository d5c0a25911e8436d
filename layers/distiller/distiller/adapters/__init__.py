"""Every client of the outside world in one place: MongoDB, SQS, Secrets Manager, S3."""
