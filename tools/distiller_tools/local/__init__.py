"""Running the pipeline on one machine: an embedded AWS endpoint, the real handlers, a partner receiver.

Never imported by the Lambda functions.
"""
