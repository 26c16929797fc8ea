"""The broker: the message the scheduler sends, and its batched enqueue."""
