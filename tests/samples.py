"""Conversation pieces several tests share: the seed README's own example function."""

from invoker.examples import GET_TIME

__all__ = ["GET_TIME"]
