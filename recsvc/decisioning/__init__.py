"""Decisioning: which offer to make now. Customer rules, the arbitration objective, contact and
suppression policy, budgets as pure checks, reason codes and the removed-offer explanation.

Pure (numpy + stdlib); imports only ``recsvc.core``. Serving and training both call it, so
evaluation decides exactly as serving does.
"""
