"""The feedback side of the store: the RecordFeedback script and its sender, the event and
decision streams (reads, trims, backlog) and the fold-in consumer's writes.
"""
