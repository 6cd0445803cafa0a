"""Evaluation: feature extraction, generative metrics, classifier metrics, the HTML report."""
