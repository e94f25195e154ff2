"""Live control state: budgets, live offers and do-not-contact, experiments, and the version
registry (publish, activate, rollback). redis-py only.
"""
