"""Evaluation, batch prediction and run comparison: the commands between training and serving."""
