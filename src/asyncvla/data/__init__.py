"""Demonstration data: scripted-expert recording and a LeRobot-v3-style dataset (writer and reader)."""

from asyncvla.data.lerobot import DemoDataset, load_dataset

__all__ = ["DemoDataset", "load_dataset"]
