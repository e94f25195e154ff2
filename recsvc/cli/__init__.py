"""The ``recsvc`` console script and its client commands (recommend, health, models). The top
room: it may import everything in recsvc; training commands come in through the
``recsvc.commands`` entry-point group, so recsvc never imports ``training``.
"""
