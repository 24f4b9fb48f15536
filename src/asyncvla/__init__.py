"""asyncvla: fully asynchronous RL post-training of Vision-Language-Action policies."""

__version__ = "0.1.0"
