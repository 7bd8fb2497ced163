"""`make demo`: Signoff running end to end on one machine with nothing configured."""
