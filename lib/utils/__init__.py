"""Small helpers shared by the run scripts: device choice, logging, curve plots."""
from .device import select_device
from .logger import setup_logger

__all__ = ["select_device", "setup_logger"]
