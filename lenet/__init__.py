"""LeNet-5 on CIFAR-10: the engine under the web app and the command line (no Streamlit here)."""

from .data import CLASSES

__all__ = ["CLASSES"]
