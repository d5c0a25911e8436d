"""Getting deliveries out: the message, signing, SSRF-checked sending, the dispatcher and its log."""
