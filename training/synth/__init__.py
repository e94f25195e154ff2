"""Synthetic worlds: `recsvc datagen` (planted preferences), the biased world with ground truth
(world, worldeval) and `recsvc simulate`, which runs the whole loop on it through the real API.
May import the rest of training; nothing in training imports it but the commands.
"""
